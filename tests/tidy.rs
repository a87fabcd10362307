//! The shape of the code, checked from its text: which layers a module may
//! name (arrows point down), and the one-writer rule (only `room/` starts a
//! room's writer or writes a room's list and state).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level modules a file names as `crate::<module>`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    // `use crate::{a, b::{c, d}, e}` names several at once: the names at
    // the group's top level, however deep its inner groups go.
    for (i, _) in text.match_indices("crate::{") {
        let mut depth = 0;
        let mut at_top_start = true;
        let mut name = String::new();
        for c in text[i + "crate::".len()..].chars() {
            match c {
                '{' => {
                    depth += 1;
                    at_top_start = depth == 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    if !name.is_empty() {
                        out.insert(std::mem::take(&mut name));
                    }
                    at_top_start = true;
                }
                c if at_top_start && depth == 1 && (c.is_ascii_alphanumeric() || c == '_') => name.push(c),
                _ if at_top_start && depth == 1 && !name.is_empty() => {
                    out.insert(std::mem::take(&mut name));
                    at_top_start = false;
                }
                _ => {}
            }
        }
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Every top-level module, bottom up, with the layers it may name. A layer
/// names only layers listed before it, so the arrows form no circle. `room`
/// reaches the network only through its own `RoomNetwork` trait and gets
/// everything else in `RoomDeps`; the services that federation handlers and
/// client API share live in `federation` (its `Node`), below `client_api`.
const LAYERS: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("sys", &[]),
    ("crash", &[]),
    ("config", &["core"]),
    ("store", &["core", "crash", "sys"]),
    ("http", &["core", "store", "config", "sys"]),
    ("room", &["core", "store", "crash", "sys"]),
    ("ephemeral", &["core", "store", "sys"]),
    ("wire", &["core", "store", "http", "room"]),
    ("e2ee", &["core", "store", "wire"]),
    ("media", &["core", "sys", "config", "store", "http", "wire"]),
    ("federation", &["core", "sys", "crash", "config", "store", "http", "room", "ephemeral", "wire", "e2ee", "media"]),
    ("push", &["core", "sys", "config", "store", "http", "room", "wire", "federation"]),
    ("admin", &["core", "sys", "config", "store", "http", "federation"]),
    (
        "client_api",
        &[
            "core",
            "sys",
            "crash",
            "config",
            "store",
            "http",
            "room",
            "ephemeral",
            "wire",
            "e2ee",
            "media",
            "federation",
            "push",
            "admin",
        ],
    ),
    ("bench", &["core", "sys", "config", "http", "store"]),
    (
        "app",
        &[
            "core",
            "sys",
            "crash",
            "config",
            "store",
            "http",
            "room",
            "ephemeral",
            "wire",
            "e2ee",
            "media",
            "federation",
            "push",
            "admin",
            "client_api",
        ],
    ),
    (
        "cli",
        &[
            "core",
            "sys",
            "crash",
            "config",
            "store",
            "http",
            "room",
            "ephemeral",
            "wire",
            "e2ee",
            "media",
            "federation",
            "admin",
            "client_api",
            "bench",
            "app",
        ],
    ),
];

#[test]
fn the_layer_table_has_no_circle() {
    for (rank, (layer, allowed)) in LAYERS.iter().enumerate() {
        for name in allowed.iter() {
            let below = LAYERS[..rank].iter().any(|(l, _)| l == name);
            assert!(below, "{layer} may name {name}, which is not listed below it");
        }
    }
}

#[test]
fn imports_point_down() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let layer = rel.split(['/', '.']).next().unwrap().to_owned();
        let Some((_, allowed)) = LAYERS.iter().find(|(l, _)| *l == layer) else {
            wrong.push(format!("{rel} is in no layer of the table"));
            continue;
        };
        let names = named_modules(&std::fs::read_to_string(&file).unwrap());
        for n in names.iter().filter(|n| **n != layer && !allowed.contains(&n.as_str())) {
            wrong.push(format!("{rel} names crate::{n}"));
        }
    }
    assert!(wrong.is_empty(), "imports that run up or sideways:\n{}", wrong.join("\n"));
}

#[test]
fn only_room_starts_writers_and_writes_lists() {
    const WRITER_ONLY: &[&str] =
        &["spawn_room(", "Op::ListEntry", "Op::PutRoom", "Op::SetState", "Op::DeleteState", "RoomCmd::Seed"];
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
        // The store applies these writes; the room module makes them.
        if rel.starts_with("room/") || rel.starts_with("store/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for token in WRITER_ONLY.iter().filter(|t| text.contains(**t)) {
            wrong.push(format!("{rel} uses {token}"));
        }
    }
    assert!(wrong.is_empty(), "room records written outside room/:\n{}", wrong.join("\n"));
}

/// The room machine decides without I/O: it names only the core and the
/// store's records and read trait, never a runtime, the network, the
/// configuration, a clock or randomness.
#[test]
fn the_room_machine_does_no_io() {
    const IO: &[&str] = &[
        "tokio",
        "hyper",
        "sled",
        "rustls",
        "figment",
        "now_ms",
        "SystemTime",
        "Instant::",
        "getrandom",
        "random_string",
        ".write(",
        ".flush(",
        "std::fs",
        "std::net",
        "std::thread",
    ];
    let dir = src().join("room/machine");
    let files = rust_files(&dir);
    assert!(files.len() >= 5, "the machine's files are where this test looks");
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        // The model tests write what the machine hands back, as a driver would.
        let checked = if rel.ends_with("_test.rs") { "" } else { text.as_str() };
        for n in named_modules(&text).iter().filter(|n| !["core", "store", "room"].contains(&n.as_str())) {
            wrong.push(format!("{rel} names crate::{n}"));
        }
        for room_path in text.match_indices("crate::room::").map(|(i, _)| &text[i + "crate::room::".len()..]) {
            if !room_path.starts_with("machine") && !rel.ends_with("_test.rs") {
                wrong.push(format!("{rel} names crate::room outside the machine"));
            }
        }
        for token in IO.iter().filter(|t| checked.contains(**t)) {
            wrong.push(format!("{rel} uses {token}"));
        }
    }
    assert!(wrong.is_empty(), "I/O in the room machine:\n{}", wrong.join("\n"));
}

/// The client API is handed its share of the server (`ClientDeps`) and
/// reaches other servers through `federation::Remote`; it never holds the
/// federation layer's `Node` nor calls into its internals.
#[test]
fn the_client_api_gets_only_its_share() {
    const FEDERATION_INSIDE: &[&str] = &[
        "Node",
        "federation::join",
        "federation::fetch",
        "federation::dag",
        "federation::outbound",
        "federation::inbound",
    ];
    let files = rust_files(&src().join("client_api"));
    assert!(files.len() >= 10, "the client API's files are where this test looks");
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        for token in FEDERATION_INSIDE.iter().filter(|t| text.contains(**t)) {
            wrong.push(format!("{rel} names {token}"));
        }
    }
    assert!(wrong.is_empty(), "the client API reaching past its share:\n{}", wrong.join("\n"));
}

/// What a failure answers is decided in `wire` alone: no handler names a
/// Matrix error code or builds an error body itself. (The federation
/// client reads other servers' codes; room tests name a refusal's code.)
#[test]
fn error_answers_are_made_in_one_place() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
        if rel.starts_with("wire/")
            || rel.starts_with("bench/")
            || rel == "federation/client.rs"
            || rel.ends_with("write_failures.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for token in ["\"M_", "\"errcode\""].iter().filter(|t| text.contains(**t)) {
            wrong.push(format!("{rel} names {token}"));
        }
    }
    assert!(wrong.is_empty(), "error answers made outside wire:\n{}", wrong.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    let names = named_modules("use crate::core::ids;\nuse crate::{node::Node, room};\nlet x = crate::http::f();");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["core", "http", "node", "room"]);
    let nested = named_modules("use crate::{a::{b, c::{d}}, e,\n    f::g};");
    assert_eq!(nested.into_iter().collect::<Vec<_>>(), ["a", "e", "f"]);
    // The tree holds the files these rules speak of.
    let files: Vec<_> = rust_files(&src()).into_iter().map(|f| f.to_string_lossy().replace('\\', "/")).collect();
    assert!(files.iter().any(|f| f.ends_with("src/room/directory.rs")));
    assert!(files.iter().any(|f| f.ends_with("src/core/rooms/order.rs")));
}
