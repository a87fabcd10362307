//! `deploy/`, checked the way its tools read it: the systemd unit with
//! `systemd-analyze` (it verifies, and its sandboxing rates 2.0 or better),
//! the compose file and the Kubernetes example parsed as YAML with what
//! they must hold, the container file and `.dockerignore` for what they
//! must say; and `lmx health`, which the container's health check runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap()
}

/// `systemd-analyze`, or `None` where it is missing (then the test says so,
/// and fails when the suite requires it).
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("LMX_REQUIRE_SYSTEMD_ANALYZE").is_err(), "systemd-analyze is not installed");
        eprintln!("skipping: systemd-analyze is not installed (scripts/test-all installs it)");
    }
    found.then_some("systemd-analyze")
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let unit = read("lmx.service");
    for line in ["Type=notify", "DynamicUser=yes", "StateDirectory=lmx", "ExecReload=/bin/kill -HUP $MAINPID"] {
        assert!(unit.lines().any(|l| l.trim() == line), "the unit has {line}");
    }
    let Some(tool) = systemd_analyze() else { return };
    // `verify` wants the binary ExecStart names to exist: the one just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lmx.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/lmx", env!("CARGO_BIN_EXE_lmx"))).unwrap();
    let verify = Command::new(tool).arg("verify").arg(&copy).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !said.contains("lmx.service"), "systemd-analyze verify: {said}");
    let security = Command::new(tool).args(["security", "--offline=true"]).arg(&copy).output().unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for lmx.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall score in:\n{text}\n{}", String::from_utf8_lossy(&security.stderr)));
    assert!(score <= 2.0, "systemd-analyze security rates the unit {score}:\n{text}");
}

fn yaml(file: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A key of a service, or of what its `<<` merge brings in.
fn merged<'a>(service: &'a Yaml, key: &str) -> &'a Yaml {
    let own = &service[key];
    if own.is_badvalue() {
        &service["<<"][key]
    } else {
        own
    }
}

/// A service's environment variable, from its own map or the one it
/// merges in (`<<`).
fn env_var<'a>(service: &'a Yaml, name: &str) -> Option<&'a str> {
    let env = merged(service, "environment");
    env[name].as_str().or_else(|| env["<<"][name].as_str())
}

#[test]
fn compose_runs_a_hub_and_two_followers_on_loopback_ports() {
    let docs = yaml("compose.yaml");
    let services = &docs[0]["services"];
    for (name, mode) in [("hub", None), ("follower1", Some("follower")), ("follower2", Some("follower"))] {
        let s = &services[name];
        assert!(!s.is_badvalue(), "service {name}");
        let env = &s["environment"];
        assert_eq!(env["LMX_SERVER_NAME"].as_str(), Some(format!("{name}:8448").as_str()), "{name}'s server name");
        assert_eq!(env["LMX_MODE"].as_str(), mode, "{name}'s mode");
        assert_eq!(s["hostname"].as_str(), Some(name));
        let ports = s["ports"].as_vec().unwrap_or_else(|| panic!("{name} publishes ports"));
        for p in ports {
            assert!(p.as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{name} publishes {p:?} beyond loopback");
        }
        let check = merged(s, "healthcheck");
        let test: Vec<&str> = check["test"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
        assert!(test.contains(&"health"), "{name}'s health check runs lmx health: {test:?}");
        assert!(merged(s, "build")["dockerfile"].as_str() == Some("deploy/Containerfile"));
    }
    assert!(!services["follower1"]["depends_on"]["hub"].is_badvalue(), "followers wait for the hub");
}

#[test]
fn compose_runs_three_processes_of_one_server_on_postgres_behind_a_ready_checked_proxy() {
    let docs = yaml("compose-postgres.yaml");
    let services = &docs[0]["services"];
    let pg = &services["postgres"];
    assert!(pg["image"].as_str().is_some_and(|i| i.starts_with("postgres:")), "a PostgreSQL service");
    assert!(!pg["healthcheck"]["test"].is_badvalue(), "PostgreSQL has a health check");
    let processes = ["lmx1", "lmx2", "lmx3"];
    let mut volumes = Vec::new();
    for name in processes {
        let s = &services[name];
        assert_eq!(env_var(s, "LMX_SERVER_NAME"), Some("hub:8448"), "{name} serves the one name");
        assert_eq!(env_var(s, "LMX_STORAGE__BACKEND"), Some("postgres"));
        let url_file = env_var(s, "LMX_STORAGE__POSTGRES__URL_FILE").expect("the URL from a file");
        let secret = url_file.rsplit('/').next().unwrap();
        assert!(merged(s, "secrets").as_vec().unwrap().iter().any(|x| x.as_str() == Some(secret)), "{secret} mounted");
        assert!(!docs[0]["secrets"][secret].is_badvalue(), "{secret} is declared");
        assert_eq!(merged(s, "depends_on")["postgres"]["condition"].as_str(), Some("service_healthy"));
        assert!(merged(s, "ports").is_badvalue(), "{name} is reached through the proxy only");
        volumes.push(merged(s, "volumes")[0].as_str().unwrap().to_owned());
    }
    assert!(volumes.iter().all(|v| v == &volumes[0]), "one signing key and media volume: {volumes:?}");
    let hub = &services["hub"];
    assert_eq!(hub["hostname"].as_str(), Some("hub"));
    for p in hub["ports"].as_vec().unwrap() {
        assert!(p.as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "published beyond loopback: {p:?}");
    }
    // The proxy sends both ports to whichever process is ready.
    let proxy = read("haproxy.cfg");
    assert_eq!(proxy.matches("option httpchk GET /ready").count(), 2, "both backends check /ready");
    for name in processes {
        assert!(proxy.contains(&format!("server {name} {name}:8448 check port 8008")), "federation to {name}");
        assert!(proxy.contains(&format!("server {name} {name}:8008 check")), "client API to {name}");
    }
    // The variables name keys lmx takes (LMX_A__B is a.b), with the URL
    // read from its file.
    let url = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(url.path(), "postgresql://lmx:pw@postgres/lmx\n").unwrap();
    let env = merged(&services["lmx1"], "environment");
    assert!(env["LMX_STORAGE__POSTGRES__URL_FILE"].as_str().is_some());
    let key = |var: &str| var.trim_start_matches("LMX_").to_ascii_lowercase().replace("__", ".");
    let options = [
        format!("{}=postgres", key("LMX_STORAGE__BACKEND")),
        format!("{}={}", key("LMX_STORAGE__POSTGRES__URL_FILE"), url.path().display()),
        format!(
            "{}={}",
            key("LMX_STORAGE__POSTGRES__STANDBY"),
            env["LMX_STORAGE__POSTGRES__STANDBY"].as_str().unwrap()
        ),
        format!("{}={}", key("LMX_CLIENT__TRUSTED_PROXIES"), env["LMX_CLIENT__TRUSTED_PROXIES"].as_str().unwrap()),
    ];
    let config = lmx::config::Config::load_with(None, &options).unwrap().config;
    // The third process is a member, its variable a key lmx takes.
    assert_eq!(env_var(&services["lmx1"], "LMX_STORAGE__POSTGRES__MEMBER"), None);
    let member = env_var(&services["lmx3"], "LMX_STORAGE__POSTGRES__MEMBER").expect("lmx3 is a member");
    let with_member = [options.to_vec(), vec![format!("{}={member}", key("LMX_STORAGE__POSTGRES__MEMBER"))]].concat();
    assert!(lmx::config::Config::load_with(None, &with_member).unwrap().config.storage.postgres.member);
    assert_eq!(config.storage.backend, lmx::config::Backend::Postgres);
    assert_eq!(config.storage.postgres.url.as_deref(), Some("postgresql://lmx:pw@postgres/lmx"));
    assert_eq!(config.storage.postgres.standby, lmx::config::Standby::Forward, "standbys forward");
    let compose_network: std::net::IpAddr = "172.18.0.5".parse().unwrap();
    assert!(config.client.trusted_proxies.iter().any(|n| n.contains(&compose_network)), "the proxies are trusted");
}

/// The ConfigMap's `lmx.toml`, loaded as lmx loads a file (unknown keys
/// refused); secret files are not read.
fn configmap_config(docs: &[Yaml]) -> lmx::config::Config {
    let map = docs.iter().find(|d| d["kind"].as_str() == Some("ConfigMap")).expect("a ConfigMap");
    let text = map["data"]["lmx.toml"].as_str().unwrap();
    use figment::providers::{Format, Serialized, Toml};
    let config: lmx::config::Config = figment::Figment::from(Serialized::defaults(lmx::config::Config::default()))
        .merge(Toml::string(text))
        .extract()
        .unwrap_or_else(|e| panic!("the ConfigMap's lmx.toml: {e}"));
    config
}

#[test]
fn the_kubernetes_postgres_example_runs_standbys_that_answer_probes() {
    let docs = yaml("kubernetes/lmx-postgres.yaml");
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap_or_else(|| panic!("a {k}"));
    let config = configmap_config(&docs);
    assert_eq!(config.storage.backend, lmx::config::Backend::Postgres);
    assert_eq!(config.storage.postgres.standby, lmx::config::Standby::Probes, "standbys answer the probes");
    let deployment = kind("Deployment");
    assert!(deployment["spec"]["replicas"].as_i64().is_some_and(|n| n >= 2), "standbys run");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    // Probes on the client port, which a standby answers.
    let client_port = c["ports"].as_vec().unwrap().iter().find(|p| p["name"].as_str() == Some("client")).unwrap();
    assert_eq!(client_port["containerPort"].as_i64(), Some(i64::from(config.client.listen.port())));
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"].as_str(), Some("client"), "{probe}");
    }
    // Secret files the configuration names are in the mounted Secret.
    let secret = kind("Secret");
    let mount = c["volumeMounts"].as_vec().unwrap().iter().find(|m| m["name"].as_str() == Some("secrets")).unwrap();
    let dir = mount["mountPath"].as_str().unwrap();
    for file in
        [config.storage.postgres.url_file.as_ref().unwrap(), config.registration.shared_secret_file.as_ref().unwrap()]
    {
        let key = file.strip_prefix(dir).unwrap_or_else(|_| panic!("{} under {dir}", file.display()));
        assert!(!secret["stringData"][key.to_str().unwrap()].is_badvalue(), "{key:?} in the Secret");
    }
    let mut loaded = config.clone();
    loaded.storage.postgres.url = secret["stringData"]["postgres-url"].as_str().map(str::to_owned);
    loaded.validate().unwrap();
    // One data volume every pod mounts at data_dir.
    let data = c["volumeMounts"].as_vec().unwrap().iter().find(|m| m["name"].as_str() == Some("data")).unwrap();
    assert_eq!(data["mountPath"].as_str().map(std::path::Path::new), Some(config.data_dir.as_path()));
    let claim = pod["volumes"].as_vec().unwrap().iter().find(|v| v["name"].as_str() == Some("data")).unwrap();
    let pvc = kind("PersistentVolumeClaim");
    assert_eq!(claim["persistentVolumeClaim"]["claimName"].as_str(), pvc["metadata"]["name"].as_str());
    assert_eq!(pvc["spec"]["accessModes"][0].as_str(), Some("ReadWriteMany"), "shared by the replicas");
    // The Service selects these pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in kind("Service")["spec"]["selector"].as_hash().unwrap() {
        assert_eq!(&labels[k.as_str().unwrap()], v, "the Service selects the pods");
    }
}

#[test]
fn the_kubernetes_example_is_a_probed_non_root_statefulset() {
    let docs = yaml("kubernetes/lmx.yaml");
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap_or_else(|| panic!("a {k}"));
    let set = kind("StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/health"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/ready"));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert!(!set["spec"]["volumeClaimTemplates"][0].is_badvalue(), "data on a persistent volume");
    assert!(kind("Service")["spec"]["ports"].as_vec().is_some_and(|p| p.len() == 2));
    let config = configmap_config(&docs);
    config.validate().unwrap();
    assert!(config.registration.shared_secret_file.is_some(), "the secret comes from the Secret");
}

#[test]
fn the_container_runs_unprivileged_with_a_health_check_and_a_lean_context() {
    let file = read("Containerfile");
    let user = file.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as {user}");
    assert!(file.contains("HEALTHCHECK") && file.contains("\"health\""), "a health check with lmx health");
    assert!(file.contains("chown lmx:lmx /data"), "the data directory belongs to the service user");
    let ignore = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore")).unwrap();
    for entry in ["target/", ".git/", "tests/clients/js/node_modules/"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore leaves out {entry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmx_health_answers_for_a_running_server_and_fails_without_one() {
    let (_net, hub) = hub_with(|_| {}).await;
    let health = |url: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lmx")).args(["health", "--url", &url]).output().await.unwrap()
    };
    let ok = health(format!("http://{}/ready", hub.client)).await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let closed = health(format!("http://127.0.0.1:{}/ready", free_port())).await;
    assert!(!closed.status.success());
    let wrong = health(format!("http://{}/nothing-here", hub.client)).await;
    assert!(!wrong.status.success(), "a 404 is not healthy");
}

/// Metric names a query names (histogram series by their family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = expr[i..].starts_with("lmx_") || expr[i..].starts_with("process_");
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && boundary {
            let end = expr[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |e| i + e);
            let name = &expr[i..end];
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.push(family.to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_charts_only_metrics_lmx_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana-dashboard.json")).unwrap();
    assert_eq!(dashboard["uid"], "lmx-overview");
    let described =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/metrics.rs")).unwrap();
    // What metrics-process exports on Linux.
    let process = ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"];
    let mut charted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()), "every panel has a title: {panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
            charted.extend(metric_names(expr));
        }
    }
    for name in &charted {
        let known = if name.starts_with("lmx_") {
            described.contains(&format!("\"{name}\""))
        } else {
            process.contains(&name.as_str())
        };
        assert!(known, "the dashboard charts {name}, which lmx does not export");
    }
    for must in ["lmx_events_sequenced_total", "lmx_federation_queue_lag_seconds", "lmx_http_requests_total"] {
        assert!(charted.contains(must), "the dashboard charts {must}");
    }
}
