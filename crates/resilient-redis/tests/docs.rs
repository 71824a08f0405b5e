//! The docs say the same as the code and as each other: README.md, the crate docs (`lib.rs`)
//! and the module docs. (The figures themselves are measured by the tests they name.)

mod common;

use common::exactly_once::{bytes_per_write_in, documented_bytes_per_write, prose};

const README: &str = include_str!("../../../README.md");
const LIB: &str = include_str!("../src/lib.rs");
const EXACTLY_ONCE: &str = include_str!("../src/exactly_once/mod.rs");
const HANDLE: &str = include_str!("../src/exactly_once/handle.rs");
const WORKSPACE: &str = include_str!("../../../Cargo.toml");

const DOCS: [(&str, &str); 3] = [
    ("README.md", README),
    ("lib.rs", LIB),
    ("exactly_once/mod.rs", EXACTLY_ONCE),
];

/// One figure for the server memory of an exactly-once write, the one
/// `server_memory_per_write_is_the_documented_figure` measures.
#[test]
fn the_memory_per_exactly_once_write_is_one_figure() {
    let figure = documented_bytes_per_write();
    for (name, text) in DOCS {
        let said = bytes_per_write_in(text);
        assert!(!said.is_empty(), "{name} does not state the figure");
        assert!(
            said.iter().all(|&n| n == figure),
            "{name} says {said:?} bytes per write, the module docs {figure}"
        );
    }
}

/// Exactly-once writes can still fail as ambiguous when the client gives up: every document
/// says so, none says "never ambiguous".
#[test]
fn exactly_once_is_ambiguous_only_when_the_client_gives_up() {
    assert!(HANDLE.contains("fails as ambiguous only when the client"));
    for (name, text) in DOCS.iter().take(2) {
        let flat = prose(text);
        assert!(
            flat.contains("ambiguous only when the client gives up")
                || flat.contains("ambiguous only if the client gives up"),
            "{name}"
        );
        for wrong in [
            "never \"ambiguous\"",
            "never \"may have been applied\"",
            "never ambiguous",
        ] {
            assert!(!flat.contains(wrong), "{name} says {wrong}");
        }
    }
}

/// The README shows the `[dependencies]` a user needs: this crate, redis-rs of the version it
/// is built on, and `futures` for the subscription example's `StreamExt`.
#[test]
fn the_readme_has_a_cargo_toml_snippet() {
    let start = README
        .find("```toml\n[dependencies]")
        .expect("a Cargo.toml snippet");
    let snippet = &README[start..start + README[start + 3..].find("```").unwrap()];
    let redis_version = |text: &str| {
        let line = text.lines().find(|l| l.starts_with("redis = "))?;
        let from = line.find("version = \"")? + "version = \"".len();
        Some(line[from..].split('"').next()?.to_owned())
    };
    assert_eq!(
        redis_version(snippet),
        redis_version(WORKSPACE),
        "{snippet}"
    );
    for dependency in ["resilient-redis = ", "tokio = ", "futures = "] {
        assert!(
            snippet.contains(dependency),
            "{dependency} missing: {snippet}"
        );
    }
    assert!(
        LIB.contains("use futures::StreamExt;"),
        "the example the snippet serves"
    );
}

/// Where the README has users reproduce `DEBUG SLEEP`, it says Redis 7 needs
/// `enable-debug-command`.
#[test]
fn debug_sleep_comes_with_enable_debug_command() {
    assert!(README.contains("DEBUG SLEEP"));
    assert!(README.contains("enable-debug-command"));
}

/// An unset `RESILIENT_REDIS_URL` is documented, in the README and in `ENV_VARS`.
#[test]
fn the_default_url_of_from_env_is_documented() {
    assert!(README.contains("(unset: `redis://127.0.0.1:6379`"));
    let (_, url) = resilient_redis::ENV_VARS
        .iter()
        .find(|(name, _)| *name == "RESILIENT_REDIS_URL")
        .unwrap();
    assert!(url.contains("unset: redis://127.0.0.1:6379"), "{url}");
}
