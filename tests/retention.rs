//! Retention rules (`/api/v1/owners/{owner}/retention`, `retention ...` on the real
//! binary): a plan deletes nothing, an apply or the next publish leaves the newest versions
//! in the signed index, pins and the last version stay, the most specific rule wins, globs,
//! age rules by the registry's clock, the scheduled pass, and who may set rules.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alpine_registry::clock::ManualClock;
use alpine_registry::store::Role;
use common::process::ChildServer;
use common::*;
use serde_json::{json, Value};

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));
const DAY: Duration = Duration::from_secs(86400);

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    auth: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some((user, secret)) = auth {
        request = request.basic_auth(user, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn set_rule(server: &TestServer, owner: &str, rule: Value) {
    let (status, body) = send(
        server,
        reqwest::Method::PUT,
        &format!("/api/v1/owners/{owner}/retention"),
        Some(rule),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn upload(server: &TestServer, repo: &str, name: &str, version: &str) {
    let response = server
        .put_admin(repo, package(name, version, "x86_64"))
        .await;
    assert_eq!(response.status(), 201, "{name}-{version}");
}

/// The files the plan (or apply) answer lists, as `name-version`, in its order.
fn files(plans: &Value) -> Vec<String> {
    plans
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["deletions"].as_array().unwrap().iter())
        .map(|d| {
            format!(
                "{}-{}",
                d["name"].as_str().unwrap(),
                d["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// `name-version` of every entry of the signed index, as apk reads it, sorted.
async fn listed(server: &TestServer, repo: &str) -> Vec<String> {
    let text = server
        .verified_index("admin", &format!("{repo}/x86_64/APKINDEX.tar.gz"), ADMIN)
        .await;
    let mut entries: Vec<String> = text
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|stanza| {
            let field = |f: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(f))
                    .unwrap()
                    .to_string()
            };
            format!("{}-{}", field("P:"), field("V:"))
        })
        .collect();
    entries.sort();
    entries
}

/// Polls the signed index until it lists `want` (sorted), for up to ten seconds.
async fn until_listed(server: &TestServer, repo: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = listed(server, repo).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{repo} lists {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SIX: [&str; 6] = [
    "1.2-r0",
    "1.9-r0",
    "1.10-r0",
    "1.10-r1",
    "2.0_rc1-r0",
    "2.0-r0",
];

#[tokio::test]
async fn keep_two_plans_the_four_oldest_then_apply_leaves_the_newest_two_and_the_pinned_one() {
    let server = TestServer::start().await;
    // Uploaded out of version order: apk's order decides, not the upload's.
    for version in [
        "1.10-r0",
        "2.0-r0",
        "1.2-r0",
        "2.0_rc1-r0",
        "1.9-r0",
        "1.10-r1",
    ] {
        upload(&server, "/admin/edge/main", "hello", version).await;
    }
    set_rule(
        &server,
        "admin",
        json!({"branch": "edge", "repository": "main", "keep_versions": 2}),
    )
    .await;

    let (status, plan) = send(
        &server,
        reqwest::Method::GET,
        "/api/v1/owners/admin/retention/plan?branch=edge&repository=main",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        files(&plan),
        [
            "hello-1.2-r0",
            "hello-1.9-r0",
            "hello-1.10-r0",
            "hello-1.10-r1"
        ]
    );
    assert_eq!(plan[0]["rule"]["target"], "admin/edge/main");
    assert_eq!(plan[0]["deletions"][0]["reason"], "versions");
    assert_eq!(
        plan[0]["deletions"][0]["path"],
        "/admin/edge/main/x86_64/hello-1.2-r0.apk"
    );
    // A plan deletes nothing.
    let mut all: Vec<String> = SIX.iter().map(|v| format!("hello-{v}")).collect();
    all.sort();
    assert_eq!(listed(&server, "/admin/edge/main").await, all);

    let (status, pinned) = send(
        &server,
        reqwest::Method::PUT,
        "/api/v1/owners/admin/pins/edge/main/x86_64/hello-1.9-r0.apk",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["pinned"], true);

    let (status, applied) = send(
        &server,
        reqwest::Method::POST,
        "/api/v1/owners/admin/retention/apply?branch=edge&repository=main",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(
        files(&applied),
        ["hello-1.2-r0", "hello-1.10-r0", "hello-1.10-r1"]
    );
    assert_eq!(
        applied[0]["pinned"],
        json!(["/admin/edge/main/x86_64/hello-1.9-r0.apk"])
    );
    // Acknowledged once the signed index no longer lists them.
    assert_eq!(
        listed(&server, "/admin/edge/main").await,
        ["hello-1.9-r0", "hello-2.0-r0", "hello-2.0_rc1-r0"]
    );
    let status = |path: &'static str| {
        let server = &server;
        async move { server.get(path, None).await.status().as_u16() }
    };
    assert_eq!(
        status("/admin/edge/main/x86_64/hello-1.2-r0.apk").await,
        404
    );
    assert_eq!(
        status("/admin/edge/main/x86_64/hello-1.10-r1.apk").await,
        404
    );
    assert_eq!(
        status("/admin/edge/main/x86_64/hello-2.0-r0.apk").await,
        200
    );
    assert_eq!(
        status("/admin/edge/main/x86_64/hello-1.9-r0.apk").await,
        200
    );

    let metrics = server.get("/metrics", ADMIN).await.text().await.unwrap();
    assert!(
        metrics.contains("alpine_registry_retention_deletions_total{reason=\"versions\"} 3"),
        "{metrics}"
    );
    // Unpinned, the next apply takes it.
    let (status, _) = send(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/owners/admin/pins/edge/main/x86_64/hello-1.9-r0.apk",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    let (_, applied) = send(
        &server,
        reqwest::Method::POST,
        "/api/v1/owners/admin/retention/apply",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(files(&applied), ["hello-1.9-r0"]);
    server.stop().await;
}

#[tokio::test]
async fn the_next_publish_applies_a_count_rule_without_waiting_for_it() {
    let server = TestServer::start().await;
    set_rule(&server, "admin", json!({"keep_versions": 2})).await;
    for version in ["1.0-r0", "1.1-r0", "1.2-r0", "1.3-r0"] {
        upload(&server, "/admin/edge/main", "hello", version).await;
    }
    until_listed(
        &server,
        "/admin/edge/main",
        &["hello-1.2-r0", "hello-1.3-r0"],
    )
    .await;
    assert_eq!(
        server
            .get("/admin/edge/main/x86_64/hello-1.0-r0.apk", None)
            .await
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn the_most_specific_rule_wins_and_globs_choose_the_names() {
    let server = TestServer::start().await;
    for name in ["py3-foo", "py3-keepme", "tool"] {
        for version in ["1-r0", "2-r0", "3-r0"] {
            upload(&server, "/admin/edge/main", name, version).await;
            upload(&server, "/admin/edge/other", name, version).await;
        }
    }
    // The owner's rule applies to edge/other; the repository's own to edge/main.
    set_rule(&server, "admin", json!({"keep_versions": 1})).await;
    set_rule(
        &server,
        "admin",
        json!({"branch": "edge", "repository": "main", "keep_versions": 2,
               "match": ["py3-*"], "exclude": ["py3-keep*"]}),
    )
    .await;
    let (status, plan) = send(
        &server,
        reqwest::Method::GET,
        "/api/v1/owners/admin/retention/plan?branch=edge",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let by_repo = |repository: &str| {
        let plans = Value::Array(
            plan.as_array()
                .unwrap()
                .iter()
                .filter(|p| p["repository"] == repository)
                .cloned()
                .collect(),
        );
        files(&plans)
    };
    assert_eq!(by_repo("admin/edge/main"), ["py3-foo-1-r0"]);
    let mut other = by_repo("admin/edge/other");
    other.sort();
    assert_eq!(
        other,
        [
            "py3-foo-1-r0",
            "py3-foo-2-r0",
            "py3-keepme-1-r0",
            "py3-keepme-2-r0",
            "tool-1-r0",
            "tool-2-r0"
        ]
    );

    // Without the repository's rule, the owner's applies there too.
    let (status, _) = send(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/owners/admin/retention?branch=edge&repository=main",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let (_, plan) = send(
        &server,
        reqwest::Method::GET,
        "/api/v1/owners/admin/retention/plan?branch=edge&repository=main",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(plan[0]["rule"]["target"], "admin");
    assert_eq!(files(&plan).len(), 6);
    server.stop().await;
}

#[tokio::test]
async fn an_age_rule_deletes_by_the_registry_clock_and_never_the_last_version() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    for version in ["1-r0", "2-r0", "3-r0"] {
        upload(&server, "/admin/edge/main", "hello", version).await;
    }
    clock.advance(10 * DAY);
    upload(&server, "/admin/edge/main", "fresh", "1-r0").await;
    upload(&server, "/admin/edge/main", "fresh", "2-r0").await;
    set_rule(&server, "admin", json!({"max_age": "7d"})).await;
    let plan_of = || async {
        let (status, plan) = send(
            &server,
            reqwest::Method::GET,
            "/api/v1/owners/admin/retention/plan",
            None,
            ADMIN,
        )
        .await;
        assert_eq!(status, 200, "{plan}");
        plan
    };
    // Every version of hello is old: all but the newest go; fresh is too young.
    let plan = plan_of().await;
    assert_eq!(files(&plan), ["hello-1-r0", "hello-2-r0"]);
    assert_eq!(plan[0]["deletions"][0]["reason"], "age");
    assert!(
        plan[0]["deletions"][0]["why"]
            .as_str()
            .unwrap()
            .contains("more than 7d ago"),
        "{plan}"
    );
    set_rule(&server, "admin", json!({"max_age": "7d", "keep_min": 3})).await;
    assert!(files(&plan_of().await).is_empty());
    set_rule(&server, "admin", json!({"max_age": "7d", "keep_min": 2})).await;
    assert_eq!(files(&plan_of().await), ["hello-1-r0"]);
    // Both versions of fresh are old now, and are the newest two.
    clock.advance(10 * DAY);
    assert_eq!(files(&plan_of().await), ["hello-1-r0"]);
    set_rule(&server, "admin", json!({"max_age": "7d", "keep_min": 1})).await;
    assert_eq!(
        files(&plan_of().await),
        ["fresh-1-r0", "hello-1-r0", "hello-2-r0"]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_scheduled_pass_applies_age_rules() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server =
        TestServer::start_with_clock(|c| c.retention.interval_secs = 1, clock.clone()).await;
    for version in ["1-r0", "2-r0", "3-r0"] {
        upload(&server, "/admin/edge/main", "hello", version).await;
    }
    set_rule(&server, "admin", json!({"max_age": "30d", "keep_min": 1})).await;
    clock.advance(31 * DAY);
    until_listed(&server, "/admin/edge/main", &["hello-3-r0"]).await;
    let metrics = server.get("/metrics", ADMIN).await.text().await.unwrap();
    assert!(
        metrics.contains("alpine_registry_retention_deletions_total{reason=\"age\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn owner_admins_set_rules_for_their_owner_only_and_read_or_write_tokens_cannot() {
    let server = TestServer::start().await;
    let owner_admin = server
        .user_with_token("alice", Role::Admin, None, None)
        .await;
    let reader = server
        .user_with_token("alice", Role::Read, None, None)
        .await;
    let writer = server
        .user_with_token("alice", Role::Write, None, None)
        .await;
    let rule = json!({"keep_versions": 3});
    let put = |owner: &'static str, token: String| {
        let (server, rule) = (&server, rule.clone());
        async move {
            send(
                server,
                reqwest::Method::PUT,
                &format!("/api/v1/owners/{owner}/retention"),
                Some(rule),
                Some(("alice", &token)),
            )
            .await
            .0
        }
    };
    // alice administers her namespace, not admin's.
    assert_eq!(put("alice", owner_admin.clone()).await, 200);
    assert_eq!(put("admin", owner_admin.clone()).await, 403);
    assert_eq!(put("alice", reader.clone()).await, 403);
    assert_eq!(put("alice", writer.clone()).await, 403);
    let (status, _) = send(
        &server,
        reqwest::Method::PUT,
        "/api/v1/owners/alice/retention",
        Some(rule.clone()),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, rules) = send(
        &server,
        reqwest::Method::GET,
        "/api/v1/owners/alice/retention",
        None,
        Some(("alice", &owner_admin)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rules[0]["target"], "alice");
    assert_eq!(rules[0]["keep_versions"], 3);
    // A writer may pin, as it may delete; a reader may not.
    upload(&server, "/alice/edge/main", "hello", "1-r0").await;
    let pin = |token: String| {
        let server = &server;
        async move {
            send(
                server,
                reqwest::Method::PUT,
                "/api/v1/owners/alice/pins/edge/main/x86_64/hello-1-r0.apk",
                None,
                Some(("alice", &token)),
            )
            .await
            .0
        }
    };
    assert_eq!(pin(reader).await, 403);
    assert_eq!(pin(writer).await, 200);
    // Rules that make no sense are refused in words.
    for (bad, says) in [
        (json!({}), "keep_versions"),
        (json!({"keep_versions": 0}), "at least 1"),
        (
            json!({"keep_versions": 2, "keep_min": 1}),
            "goes with max_age",
        ),
        (json!({"max_age": "90"}), "unit"),
        (
            json!({"keep_versions": 2, "match": ["[py3"]}),
            "invalid glob",
        ),
        (json!({"repository": "main", "keep_versions": 2}), "branch"),
    ] {
        let (status, body) = send(
            &server,
            reqwest::Method::PUT,
            "/api/v1/owners/alice/retention",
            Some(bad.clone()),
            ADMIN,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{bad}: {body}"
        );
    }
    server.stop().await;
}

/// `retention` and `package pin` on the real binary, beside the running server.
#[test]
fn the_retention_commands_plan_and_apply_while_the_server_runs() {
    let server = ChildServer::start_on_backends(ADMIN_TOKEN, &[]);
    let data = server.dir.path().join("data");
    let command = || {
        let mut command = cli(&data);
        server.backends.apply(&mut command);
        command
    };
    let client = reqwest::blocking::Client::new();
    for version in ["1-r0", "2-r0", "3-r0", "4-r0"] {
        let put = client
            .put(server.url("/admin/edge/main"))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .body(package("hello", version, "x86_64"))
            .send()
            .unwrap();
        assert_eq!(put.status(), 201);
    }
    let (_, stderr) = run_ok_both(command().args([
        "retention",
        "set",
        "admin/edge",
        "--keep-versions",
        "2",
        "--exclude",
        "nothing-*",
    ]));
    assert!(
        stderr.contains("set the retention rule of admin/edge"),
        "{stderr}"
    );
    let shown = run_ok(command().args(["retention", "show"]));
    assert!(shown.contains("admin/edge"), "{shown}");
    assert!(shown.contains("nothing-*"), "{shown}");

    run_ok(command().args(["package", "pin", "admin/edge/main/x86_64/hello-1-r0.apk"]));
    let plan = run_ok(command().args(["retention", "plan", "admin/edge/main"]));
    assert_eq!(
        plan,
        "would delete /admin/edge/main/x86_64/hello-2-r0.apk (rule admin/edge: beyond the \
         newest 2 versions)\nkept /admin/edge/main/x86_64/hello-1-r0.apk (pinned)\n"
    );
    let applied = run_ok(command().args(["retention", "apply", "admin"]));
    assert!(
        applied.starts_with("deleted /admin/edge/main/x86_64/hello-2-r0.apk"),
        "{applied}"
    );
    // The server sees what the command deleted.
    let url = server.url("/admin/edge/main/x86_64/hello-2-r0.apk");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.get(&url).send().unwrap().status() != 404 {
        assert!(std::time::Instant::now() < deadline, "still served");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, stderr) = run_ok_both(command().args(["retention", "remove", "admin/edge"]));
    assert!(stderr.contains("removed"), "{stderr}");
    let message = run_err(command().args(["retention", "remove", "admin/edge"]));
    assert!(
        message.contains("no retention rule for admin/edge"),
        "{message}"
    );
    let message = run_err(command().args(["retention", "set", "admin", "--keep-min", "2"]));
    assert!(message.contains("--max-age"), "{message}");
}

#[tokio::test]
async fn the_openapi_document_describes_retention_with_every_answer() {
    let server = TestServer::start().await;
    let document: Value = server
        .get("/api/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    let paths = &document["paths"];
    for (path, method, id, statuses) in [
        (
            "/api/v1/owners/{owner}/retention",
            "get",
            "list_retention_rules",
            &["200", "400", "401", "403", "404", "429", "503"][..],
        ),
        (
            "/api/v1/owners/{owner}/retention",
            "put",
            "set_retention_rule",
            &[
                "200", "400", "401", "403", "404", "413", "415", "429", "503",
            ][..],
        ),
        (
            "/api/v1/owners/{owner}/retention",
            "delete",
            "remove_retention_rule",
            &["204", "400", "401", "403", "404", "503"][..],
        ),
        (
            "/api/v1/owners/{owner}/retention/plan",
            "get",
            "plan_retention",
            &["200", "400", "401", "403", "404", "503"][..],
        ),
        (
            "/api/v1/owners/{owner}/retention/apply",
            "post",
            "apply_retention",
            &["200", "400", "401", "403", "404", "503"][..],
        ),
        (
            "/api/v1/owners/{owner}/pins/{branch}/{repository}/{arch}/{file}",
            "put",
            "pin_package",
            &["200", "400", "401", "403", "404", "503"][..],
        ),
        (
            "/api/v1/owners/{owner}/pins/{branch}/{repository}/{arch}/{file}",
            "delete",
            "unpin_package",
            &["200", "400", "401", "403", "404", "503"][..],
        ),
    ] {
        let operation = &paths[path][method];
        assert_eq!(operation["operationId"], id, "{method} {path}");
        for status in statuses {
            assert!(
                operation["responses"].get(*status).is_some(),
                "{method} {path} {status}: {operation}"
            );
        }
    }
    server.stop().await;
}

/// On PostgreSQL, where instances share the database, a scheduled pass while another
/// holds the pass's lock does nothing; once it is released, the pass deletes.
#[tokio::test]
async fn a_scheduled_pass_does_not_run_while_another_instance_runs_one() {
    let server = TestServer::start().await;
    for version in ["1-r0", "2-r0", "3-r0"] {
        upload(&server, "/admin/edge/main", "hello", version).await;
    }
    set_rule(&server, "admin", json!({"keep_versions": 1})).await;
    let state = &server.state;
    let held = state
        .store
        .try_lock_retention_pass()
        .await
        .unwrap()
        .unwrap();
    if server.database_url().is_some() {
        assert!(held.is_held());
        assert!(state
            .store
            .try_lock_retention_pass()
            .await
            .unwrap()
            .is_none());
        let deleted = alpine_registry::registry::retention::pass(state)
            .await
            .unwrap();
        assert_eq!(deleted, 0);
        assert_eq!(listed(&server, "/admin/edge/main").await.len(), 3);
    }
    drop(held);
    // The lock is let go by a rollback sent after the drop: until it has gone through, a
    // pass still finds it taken and deletes nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let deleted = loop {
        let deleted = alpine_registry::registry::retention::pass(state)
            .await
            .unwrap();
        if deleted != 0 || std::time::Instant::now() > deadline {
            break deleted;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(deleted, 2);
    assert_eq!(listed(&server, "/admin/edge/main").await, ["hello-3-r0"]);
    // A second pass finds nothing more.
    assert_eq!(
        alpine_registry::registry::retention::pass(state)
            .await
            .unwrap(),
        0
    );
    server.stop().await;
}
