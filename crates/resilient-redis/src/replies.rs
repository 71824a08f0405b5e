//! What a server error reply means to the client: one table for every deployment.
//!
//! A reply's code is read once, into [`Code`]: redis-rs's typed [`ServerErrorKind`] where it has
//! one, a small enum for the codes it has none for (`BUSY`, `THROTTLED`, `NOREPLICAS`), and the
//! caller's own [`ErrorRule`]s, which come first. [`meaning`] then answers, for a deployment
//! ([`Deployment`]: the table's one column), whether the command surely did not run and may be
//! retried, whether that is the server's fault (the circuit breaker counts it), whether it is an
//! overload refusal (adaptive throttling counts it), and what it says about the topology.
//!
//! | code | meaning, every deployment | differs by deployment |
//! |---|---|---|
//! | caller's [`ErrorRule`] | as the rule says | no |
//! | `LOADING`, `BUSY` | not run; server fault; overload; wait until the server takes work | no |
//! | `MASTERDOWN`, `NOREPLICAS` | not run; server fault | no |
//! | `TRYAGAIN`, `CLUSTERDOWN` | not run; the cluster is reconfiguring, not the node's fault | no |
//! | `READONLY`, `UNBLOCKED` (instance state changed) | not run; the node was demoted (not its fault: it answers) | no |
//! | `THROTTLED` | not run; retry after [`ClientConfig::throttle_delay`](crate::ClientConfig::throttle_delay); overload, not a fault | no |
//! | `MOVED`, `ASK` | | Cluster: a redirect; elsewhere the caller's reply |
//! | `NOAUTH`, `WRONGPASS` | with a [credentials provider](crate::credentials): not run; the connection is replaced with fresh credentials (not a fault); otherwise the caller's reply | no |
//! | any other (`WRONGTYPE`, `NOSCRIPT`, `OOM`, ...) | the caller's reply, never retried | no |

use std::{collections::HashMap, time::Duration};

use redis::{ServerError, ServerErrorKind};
use resilience::Classification;

/// The kind of deployment a client follows: the one column of the reply table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deployment {
    /// One server at a fixed address.
    Standalone,
    /// The master a Sentinel deployment names.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

/// A server error code, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// A code redis-rs has a kind for.
    Kind(ServerErrorKind),
    /// `BUSY`: a script or function has run past `busy-reply-threshold`.
    Busy,
    /// `THROTTLED`: a proxy or managed service asks the client to slow down.
    Throttled,
    /// `NOREPLICAS`: not enough replicas for `min-replicas-to-write`.
    NoReplicas,
    /// `NOAUTH`, `WRONGPASS`: the connection is not authenticated, or the credentials are wrong.
    Auth,
    /// `UNBLOCKED ... instance state changed`: a blocking command was ended, not run, because its
    /// server became a replica. (`UNBLOCKED` from `CLIENT UNBLOCK ... ERROR` is the caller's
    /// business: [`Code::Other`].)
    UnblockedByDemotion,
    /// Any other code.
    Other,
}

impl Code {
    /// The code of `err`.
    pub(crate) fn of(err: &ServerError) -> Code {
        if let Some(kind) = err.kind() {
            return Code::Kind(kind);
        }
        if err.code() == "UNBLOCKED"
            && err
                .details()
                .is_some_and(|d| d.contains("instance state changed"))
        {
            return Code::UnblockedByDemotion;
        }
        Code::without_kind(err.code())
    }

    /// The code of a server reply carried by a [`RedisError`](redis::RedisError); `None` when
    /// the error is not a reply.
    pub(crate) fn of_redis(err: &redis::RedisError) -> Option<Code> {
        match err.kind() {
            redis::ErrorKind::Server(kind) => Some(Code::Kind(kind)),
            _ => err.code().map(Code::without_kind),
        }
    }

    /// The code's name, for metric labels and spans (`OTHER` for codes the table does not
    /// name: a caller's own codes, `WRONGTYPE`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::Kind(kind) => match kind {
                ServerErrorKind::ResponseError => "ERR",
                ServerErrorKind::ExecAbort => "EXECABORT",
                ServerErrorKind::BusyLoading => "LOADING",
                ServerErrorKind::NoScript => "NOSCRIPT",
                ServerErrorKind::Moved => "MOVED",
                ServerErrorKind::Ask => "ASK",
                ServerErrorKind::TryAgain => "TRYAGAIN",
                ServerErrorKind::ClusterDown => "CLUSTERDOWN",
                ServerErrorKind::CrossSlot => "CROSSSLOT",
                ServerErrorKind::MasterDown => "MASTERDOWN",
                ServerErrorKind::ReadOnly => "READONLY",
                ServerErrorKind::NotBusy => "NOTBUSY",
                ServerErrorKind::NoSub => "NOSUB",
                ServerErrorKind::NoPerm => "NOPERM",
                #[allow(unreachable_patterns, reason = "redis-rs may add kinds")]
                _ => "OTHER",
            },
            Code::Busy => "BUSY",
            Code::Throttled => "THROTTLED",
            Code::NoReplicas => "NOREPLICAS",
            Code::Auth => "NOAUTH",
            Code::UnblockedByDemotion => "UNBLOCKED",
            Code::Other => "OTHER",
        }
    }

    /// A code redis-rs has no kind for.
    fn without_kind(code: &str) -> Code {
        match code {
            "BUSY" => Code::Busy,
            "THROTTLED" => Code::Throttled,
            "NOREPLICAS" => Code::NoReplicas,
            "NOAUTH" | "WRONGPASS" => Code::Auth,
            _ => Code::Other,
        }
    }

    /// A refusal of the connection's credentials or permissions: `NOAUTH`, `WRONGPASS`,
    /// `NOPERM`.
    pub(crate) fn is_auth(self) -> bool {
        matches!(self, Code::Auth | Code::Kind(ServerErrorKind::NoPerm))
    }

    /// `BUSY` or `LOADING`: the server takes no work for now.
    pub(crate) fn is_busy(self) -> bool {
        matches!(self, Code::Busy | Code::Kind(ServerErrorKind::BusyLoading))
    }
}

/// What a reply says about the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopologyHint {
    /// Nothing.
    None,
    /// The node is no longer a master (`READONLY`).
    Demoted,
    /// The cluster is changing its configuration (`TRYAGAIN`, `CLUSTERDOWN`).
    Reconfiguring,
    /// The slot lives on another node from now on (`MOVED`).
    Moved,
    /// The slot is being migrated: ask the other node this once (`ASK`).
    Ask,
}

/// What to do with a server error code the built-in rules do not cover (a cloud vendor's own
/// throttling or maintenance codes, for example). See
/// [`ClientConfig::error_rules`](crate::ClientConfig::error_rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorRule {
    /// The command was not run: retry it with backoff. Counts against the circuit breaker.
    Retry,
    /// The command was not run and the server asks to slow down: retry after at least this
    /// delay. Does not count against the circuit breaker (the server is busy, not broken).
    RetryAfter(Duration),
    /// Do not retry: return the reply to the caller.
    Fail,
}

/// What a server error reply means, when it is not simply the caller's reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Meaning {
    /// Retry or not, after what, and whether the server is at fault.
    pub(crate) class: Classification,
    /// The call ends as [`ErrorKind::Throttled`](crate::ErrorKind::Throttled) with this reply
    /// (the server asks to slow down); as [`ErrorKind::Server`](crate::ErrorKind::Server)
    /// otherwise.
    pub(crate) throttled: bool,
    /// What the client does about it besides retrying (kept with the failed attempt).
    pub(crate) hints: Hints,
}

/// What a reply asks of the client besides a retry: small, so a failed attempt can carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hints {
    /// The server refused work for overload: adaptive throttling counts it.
    pub(crate) overload: bool,
    /// Hold the retry until the server takes work again (`BUSY`, `LOADING`).
    pub(crate) wait_not_busy: bool,
    /// What the reply says about the topology.
    pub(crate) topology: TopologyHint,
    /// The server rejected the connection's credentials: replace it with fresh ones.
    pub(crate) credentials_rejected: bool,
}

impl Meaning {
    /// The command did not run: retry with backoff; `server_fault` says whether the breaker
    /// counts it.
    fn not_run(server_fault: bool) -> Meaning {
        Meaning {
            class: Classification::retry().server_fault(server_fault),
            throttled: false,
            hints: Hints {
                overload: false,
                wait_not_busy: false,
                topology: TopologyHint::None,
                credentials_rejected: false,
            },
        }
    }

    /// The command did not run and the server asks to slow down: retry after `delay`.
    fn slow_down(delay: Duration) -> Meaning {
        Meaning {
            class: Classification::retry_after(delay).server_fault(false),
            throttled: true,
            hints: Hints {
                overload: true,
                ..Meaning::not_run(false).hints
            },
        }
    }

    fn hint(mut self, topology: TopologyHint) -> Meaning {
        self.hints.topology = topology;
        self
    }
}

/// What the client's settings add to the table.
#[derive(Clone, Copy)]
pub(crate) struct Rules<'a> {
    /// The caller's own rules, by code: they come first.
    pub(crate) custom: &'a HashMap<String, ErrorRule>,
    /// Minimum wait after `THROTTLED`.
    pub(crate) throttle_delay: Duration,
    /// Credentials come from a provider: fresh ones may be accepted where these were not.
    pub(crate) renewable_credentials: bool,
}

/// What `err` means in `deployment`; `None` when it is the caller's reply (returned as is, never
/// retried).
pub(crate) fn meaning(
    err: &ServerError,
    deployment: Deployment,
    rules: Rules<'_>,
) -> Option<Meaning> {
    if !rules.custom.is_empty()
        && let Some(rule) = rules.custom.get(err.code())
    {
        return match *rule {
            ErrorRule::Retry => Some(Meaning::not_run(true)),
            ErrorRule::RetryAfter(delay) => Some(Meaning::slow_down(delay)),
            ErrorRule::Fail => None,
        };
    }
    let code = Code::of(err);
    if code == Code::Auth && rules.renewable_credentials {
        let mut m = Meaning::not_run(false);
        m.hints.credentials_rejected = true;
        return Some(m);
    }
    table(code, deployment, rules.throttle_delay)
}

/// The built-in table.
fn table(code: Code, deployment: Deployment, throttle_delay: Duration) -> Option<Meaning> {
    use ServerErrorKind as K;
    match code {
        Code::Kind(K::BusyLoading) | Code::Busy => Some(Meaning {
            hints: Hints {
                overload: true,
                wait_not_busy: true,
                ..Meaning::not_run(true).hints
            },
            ..Meaning::not_run(true)
        }),
        Code::Kind(K::MasterDown) | Code::NoReplicas => Some(Meaning::not_run(true)),
        Code::Kind(K::TryAgain | K::ClusterDown) => {
            Some(Meaning::not_run(false).hint(TopologyHint::Reconfiguring))
        }
        Code::Kind(K::ReadOnly) | Code::UnblockedByDemotion => {
            Some(Meaning::not_run(false).hint(TopologyHint::Demoted))
        }
        Code::Throttled => Some(Meaning::slow_down(throttle_delay)),
        Code::Kind(K::Moved) if deployment == Deployment::Cluster => {
            Some(Meaning::not_run(false).hint(TopologyHint::Moved))
        }
        Code::Kind(K::Ask) if deployment == Deployment::Cluster => {
            Some(Meaning::not_run(false).hint(TopologyHint::Ask))
        }
        Code::Kind(
            K::ResponseError
            | K::ExecAbort
            | K::NoScript
            | K::Moved
            | K::Ask
            | K::CrossSlot
            | K::NotBusy
            | K::NoSub
            | K::NoPerm,
        )
        | Code::Auth
        | Code::Other => None,
        // redis-rs may add kinds: the caller's reply until the table says otherwise.
        Code::Kind(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENTS: [Deployment; 3] = [
        Deployment::Standalone,
        Deployment::Sentinel,
        Deployment::Cluster,
    ];

    /// Every code the table or redis-rs knows, and a few it does not.
    const CODES: &[&str] = &[
        "ERR",
        "EXECABORT",
        "LOADING",
        "NOSCRIPT",
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "CROSSSLOT",
        "MASTERDOWN",
        "READONLY",
        "NOTBUSY",
        "NOSUB",
        "NOPERM",
        "BUSY",
        "THROTTLED",
        "NOREPLICAS",
        "WRONGTYPE",
        "OOM",
        "NOAUTH",
        "WRONGPASS",
        "MYVENDORBUSY",
    ];

    /// The only codes whose meaning may depend on the deployment.
    const DIFFER_BY_DEPLOYMENT: &[&str] = &["MOVED", "ASK"];

    fn reply(code: &str) -> ServerError {
        let detail = match code {
            "MOVED" | "ASK" => " 3999 127.0.0.1:6381",
            _ => " something",
        };
        let parsed = redis::parse_redis_value(format!("-{code}{detail}\r\n").as_bytes())
            .expect("an error reply parses");
        match parsed {
            redis::Value::ServerError(e) => e,
            other => panic!("not an error reply: {other:?}"),
        }
    }

    fn rules(custom: &HashMap<String, ErrorRule>) -> Rules<'_> {
        Rules {
            custom,
            throttle_delay: Duration::from_millis(100),
            renewable_credentials: false,
        }
    }

    #[test]
    fn rejected_credentials_are_renewed_only_with_a_provider() {
        let none = HashMap::new();
        let renewable = Rules {
            renewable_credentials: true,
            ..rules(&none)
        };
        for code in ["NOAUTH", "WRONGPASS"] {
            for d in DEPLOYMENTS {
                let m = meaning(&reply(code), d, renewable).unwrap();
                assert!(m.hints.credentials_rejected, "{code}");
                assert_eq!(m.class, Classification::retry().server_fault(false));
                assert_eq!(meaning(&reply(code), d, rules(&none)), None, "{code}");
            }
        }
        assert_eq!(
            meaning(&reply("NOPERM"), Deployment::Standalone, renewable),
            None,
            "a permission is not a credential"
        );
    }

    #[test]
    fn a_code_means_the_same_in_every_deployment_unless_the_table_says_otherwise() {
        let none = HashMap::new();
        for code in CODES {
            let err = reply(code);
            assert_eq!(err.code(), *code);
            let [standalone, sentinel, cluster] =
                DEPLOYMENTS.map(|d| meaning(&err, d, rules(&none)));
            assert_eq!(standalone, sentinel, "{code}: standalone vs sentinel");
            if DIFFER_BY_DEPLOYMENT.contains(code) {
                assert_eq!(standalone, None, "{code} is the caller's reply off Cluster");
                assert!(
                    cluster.is_some_and(|m| matches!(
                        m.hints.topology,
                        TopologyHint::Moved | TopologyHint::Ask
                    )),
                    "{code} is a redirect in Cluster"
                );
            } else {
                assert_eq!(standalone, cluster, "{code}: standalone vs cluster");
            }
        }
    }

    #[test]
    fn the_table() {
        let none = HashMap::new();
        let m = |code: &str| meaning(&reply(code), Deployment::Standalone, rules(&none));
        for code in ["LOADING", "BUSY"] {
            let m = m(code).unwrap();
            assert!(
                m.class.server_fault && m.hints.overload && m.hints.wait_not_busy,
                "{code}"
            );
            assert_eq!(m.class, Classification::retry().server_fault(true));
        }
        for code in ["MASTERDOWN", "NOREPLICAS"] {
            assert_eq!(m(code), Some(Meaning::not_run(true)), "{code}");
        }
        for code in ["TRYAGAIN", "CLUSTERDOWN"] {
            let m = m(code).unwrap();
            assert!(
                !m.class.server_fault,
                "{code}: reconfiguring is not a fault"
            );
            assert_eq!(m.hints.topology, TopologyHint::Reconfiguring);
        }
        let readonly = m("READONLY").unwrap();
        assert!(!readonly.class.server_fault, "a demoted node still answers");
        assert_eq!(readonly.hints.topology, TopologyHint::Demoted);
        let parse = |text: &str| match redis::parse_redis_value(text.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e,
            other => panic!("not an error reply: {other:?}"),
        };
        let rules = Rules {
            custom: &HashMap::new(),
            throttle_delay: Duration::from_millis(100),
            renewable_credentials: false,
        };
        // Redis 6.2+ ends blocked commands this way when its master becomes a replica.
        let demoted = parse(
            "-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n",
        );
        assert_eq!(
            meaning(&demoted, Deployment::Standalone, rules),
            Some(readonly),
            "a demotion's UNBLOCKED is READONLY's case"
        );
        // `CLIENT UNBLOCK id ERROR` is the caller's doing: its reply, never retried.
        let by_caller = parse("-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
        assert_eq!(meaning(&by_caller, Deployment::Standalone, rules), None);
        let throttled = m("THROTTLED").unwrap();
        assert_eq!(
            throttled.class,
            Classification::retry_after(Duration::from_millis(100)).server_fault(false)
        );
        assert!(
            throttled.throttled,
            "THROTTLED ends as ErrorKind::Throttled"
        );
        assert!(throttled.hints.overload);
        for code in [
            "ERR",
            "WRONGTYPE",
            "NOSCRIPT",
            "OOM",
            "NOAUTH",
            "CROSSSLOT",
            "EXECABORT",
        ] {
            assert_eq!(m(code), None, "{code} is the caller's reply");
        }
    }

    #[test]
    fn the_callers_rules_come_first_in_every_deployment() {
        let custom = HashMap::from([
            (
                "MYVENDORBUSY".to_owned(),
                ErrorRule::RetryAfter(Duration::from_secs(1)),
            ),
            ("TRYAGAIN".to_owned(), ErrorRule::Fail),
            ("WRONGTYPE".to_owned(), ErrorRule::Retry),
        ]);
        for d in DEPLOYMENTS {
            let m = |code: &str| meaning(&reply(code), d, rules(&custom));
            let vendor = m("MYVENDORBUSY").unwrap();
            assert!(
                vendor.throttled,
                "a RetryAfter rule ends as ErrorKind::Throttled"
            );
            assert!(vendor.hints.overload && !vendor.class.server_fault);
            assert_eq!(m("TRYAGAIN"), None, "{d:?}: the rule overrides the table");
            assert_eq!(m("WRONGTYPE"), Some(Meaning::not_run(true)), "{d:?}");
        }
    }
}
