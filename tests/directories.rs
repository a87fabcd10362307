//! The room and user directories, and aliases and profiles of other
//! servers, across a hub and a participant.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_aliases_profiles_and_users_are_found_across_servers() {
    let (_net, hub, p1) = hub_and_p1().await;
    let alice = hub.client().register("alice").await;
    let carol = hub.client().register("carol").await;
    let bob = p1.client().register("bob").await;
    let room = alice
        .create_room(json!({"visibility": "public", "preset": "public_chat", "name": "Rust lovers",
                            "topic": "crabs", "room_alias_name": "rust"}))
        .await;
    let private = alice.create_room(json!({"name": "Secret rust club"})).await;

    // Locally, and from p1 through federation.
    let local = alice.ok("GET", "/_matrix/client/v3/publicRooms", None).await;
    let ids: Vec<_> = local["chunk"].as_array().unwrap().iter().map(|e| e["room_id"].clone()).collect();
    assert_eq!(ids, [json!(room)], "only the published room");
    let entry = &local["chunk"][0];
    assert_eq!(
        (&entry["name"], &entry["topic"], &entry["num_joined_members"]),
        (&json!("Rust lovers"), &json!("crabs"), &json!(1))
    );
    assert_eq!(entry["canonical_alias"], json!(format!("#rust:{}", hub.name())));
    let remote = bob.ok("GET", &format!("/_matrix/client/v3/publicRooms?server={}", hub.name()), None).await;
    assert_eq!(remote["chunk"][0]["room_id"], json!(room));
    let path = format!("/_matrix/client/v3/publicRooms?server={}", hub.name());
    let found = bob.ok("POST", &path, Some(json!({"filter": {"generic_search_term": "RUST"}}))).await;
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    let none = bob.ok("POST", &path, Some(json!({"filter": {"generic_search_term": "python"}}))).await;
    assert_eq!(none["chunk"], json!([]));
    assert_eq!(p1.client().call("GET", &path, None).await.status, 401, "asking another server needs a token");

    // Another server's alias, and joining by it.
    let alias = format!("#rust:{}", hub.name());
    let resolved = bob.ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), None).await;
    assert_eq!(resolved["room_id"], json!(room));
    assert!(resolved["servers"].as_array().unwrap().contains(&json!(hub.name())));
    let missing = bob
        .call("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#nope:{}", hub.name()))), None)
        .await;
    assert_eq!((missing.status, &missing.body["errcode"]), (404, &json!("M_NOT_FOUND")));
    let joined = bob.ok("POST", &format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(json!({}))).await;
    assert_eq!(joined["room_id"], json!(room));

    // A profile of a user sharing no room, from their server.
    let name_path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&carol.user_id));
    carol.ok("PUT", &name_path, Some(json!({"displayname": "Carol C"}))).await;
    assert_eq!(
        bob.ok("GET", &format!("/_matrix/client/v3/profile/{}", enc(&carol.user_id)), None).await["displayname"],
        "Carol C"
    );
    let nobody =
        bob.call("GET", &format!("/_matrix/client/v3/profile/{}", enc(&format!("@nobody:{}", hub.name()))), None).await;
    assert_eq!(nobody.status, 404);

    // The user directory: people sharing a room or in a public one.
    let search = |term: &str| json!({"search_term": term, "limit": 10});
    let results = bob.ok("POST", "/_matrix/client/v3/user_directory/search", Some(search("ali"))).await;
    assert_eq!(results["results"][0]["user_id"], json!(alice.user_id));
    let results = bob.ok("POST", "/_matrix/client/v3/user_directory/search", Some(search("carol"))).await;
    assert_eq!(results["results"], json!([]), "carol is in no room bob can see");
    assert_eq!(carol.join(&room, &hub.name()).await.status, 200);
    let results = alice.ok("POST", "/_matrix/client/v3/user_directory/search", Some(search("Carol C"))).await;
    assert_eq!(results["results"][0]["display_name"], "Carol C");

    // The listing: its members with enough power change it.
    let list = format!("/_matrix/client/v3/directory/list/room/{}", enc(&room));
    assert_eq!(alice.ok("GET", &list, None).await["visibility"], "public");
    assert_eq!(bob.ok("GET", &list, None).await["visibility"], "private", "p1 has its own directory");
    let denied = bob.call("PUT", &list, Some(json!({"visibility": "private"}))).await;
    assert_eq!(denied.status, 403);
    alice.ok("PUT", &list, Some(json!({"visibility": "private"}))).await;
    assert_eq!(alice.ok("GET", "/_matrix/client/v3/publicRooms", None).await["chunk"], json!([]));
    alice
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/directory/list/room/{}", enc(&private)),
            Some(json!({"visibility": "public"})),
        )
        .await;
    let listed = alice.ok("GET", "/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(listed["chunk"][0]["room_id"], json!(private));
}
