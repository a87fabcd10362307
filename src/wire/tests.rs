use super::*;
use crate::store::StoreError;

fn both(f: &Failure) -> (Answer, Answer) {
    (answer(Surface::Client, f), answer(Surface::Federation, f))
}

#[test]
fn internal_causes_are_never_described() {
    let secret = "sled: /var/lib/lmx/db/blobs/17 is unreadable";
    for f in [
        Failure::from(StoreError::Backend(secret.into())),
        Failure::corrupt(secret),
        Failure::failed(secret),
        Failure::Room(RoomError::Storage(secret.into())),
        Failure::Room(RoomError::Gone),
    ] {
        for a in <[Answer; 2]>::from(both(&f)) {
            assert_eq!((a.status.as_u16(), a.errcode), (500, "M_UNKNOWN"), "{f:?}");
            assert!(!a.body.to_string().contains("sled"), "{f:?} told: {}", a.body);
        }
    }
}

#[test]
fn every_answer_has_matrix_shape() {
    let f = Failure::limit_exceeded("slow down", 500);
    let (a, _) = both(&f);
    assert_eq!((a.status.as_u16(), a.errcode), (429, "M_LIMIT_EXCEEDED"));
    assert_eq!(a.body["errcode"], "M_LIMIT_EXCEEDED");
    assert_eq!(a.body["error"], "slow down");
    assert_eq!(a.body["retry_after_ms"], 500);
    let a = answer(Surface::Client, &Failure::UnknownToken);
    assert_eq!((a.status.as_u16(), a.body["soft_logout"].as_bool()), (401, Some(false)));
    let challenge = |failed| Failure::AuthNeeded { stage: "m.login.dummy", session: "s".into(), why: "w", failed };
    let a = answer(Surface::Client, &challenge(false));
    assert_eq!(a.status.as_u16(), 401);
    assert_eq!(a.body["flows"][0]["stages"][0], "m.login.dummy");
    assert_eq!(a.body["session"], "s");
    assert!(a.body["params"].is_object());
    assert!(a.body.get("errcode").is_none(), "a first challenge is no error");
    let a = answer(Surface::Client, &challenge(true));
    assert_eq!((a.status.as_u16(), a.body["errcode"].as_str()), (401, Some("M_FORBIDDEN")));
    assert_eq!(a.body["session"], "s");
}

#[test]
fn bodies_that_cannot_be_taken() {
    let cases = [
        (BodyError::TooLarge(10), 413, "M_TOO_LARGE"),
        (BodyError::Busy, 429, "M_LIMIT_EXCEEDED"),
        (BodyError::Slow, 408, "M_UNKNOWN"),
        (BodyError::NotJson("eof".into()), 400, "M_NOT_JSON"),
        (BodyError::NotObject, 400, "M_BAD_JSON"),
        (BodyError::Unreadable("reset".into()), 400, "M_UNKNOWN"),
    ];
    for (b, status, code) in cases {
        let (c, f) = both(&Failure::Body(b.clone()));
        assert_eq!((c.status.as_u16(), c.errcode), (status, code), "{b:?}");
        assert_eq!(c, f, "a body is refused alike on both surfaces");
    }
}

#[test]
fn the_surfaces_differ_where_the_cause_reads_differently() {
    // Item 156: a request signature that authenticates nothing.
    let a = answer(Surface::Federation, &Failure::BadSignature("no X-Matrix authorization".into()));
    assert_eq!((a.status.as_u16(), a.errcode), (401, "M_FORBIDDEN"));
    // A version a client asks to create, and one a server asks to join.
    let f = Failure::UnsupportedRoomVersion("9".into());
    let (c, s) = both(&f);
    assert_eq!((c.status.as_u16(), c.errcode), (400, "M_UNSUPPORTED_ROOM_VERSION"));
    assert_eq!(
        (s.status.as_u16(), s.errcode, s.body["room_version"].as_str()),
        (400, "M_INCOMPATIBLE_ROOM_VERSION", Some("9"))
    );
    // Another server asked the wrong hub; a client's room lost its hub.
    let (c, s) = both(&Failure::Room(RoomError::NotHub));
    assert_eq!((s.status.as_u16(), s.errcode), (400, "M_WRONG_SERVER"));
    assert_eq!((c.status.as_u16(), c.errcode), (502, "M_UNKNOWN"));
    let s = answer(Surface::Federation, &Failure::WrongServer { hub: "hub.example".into() });
    assert_eq!((s.errcode, s.body["hub_server"].as_str()), ("M_WRONG_SERVER", Some("hub.example")));
    // A participant's send the hub has not sequenced yet: retry later.
    let c = answer(Surface::Client, &Failure::Room(RoomError::Pending));
    assert_eq!(
        (c.status.as_u16(), c.errcode, c.body["retry_after_ms"].as_u64()),
        (429, "M_LIMIT_EXCEEDED", Some(1_000))
    );
}

#[test]
fn names_in_use() {
    let code = |t| {
        let a = answer(Surface::Client, &Failure::Taken(t));
        (a.status.as_u16(), a.errcode)
    };
    assert_eq!(code(Taken::UserId), (400, "M_USER_IN_USE"));
    assert_eq!(code(Taken::AliasOnCreate), (400, "M_ROOM_IN_USE"));
    assert_eq!(code(Taken::Alias), (409, "M_ROOM_IN_USE"));
}
