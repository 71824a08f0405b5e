//! What the cluster says about itself: `CLUSTER SHARDS` (Redis 7+: each shard's slots, master
//! and replicas with their health) or, from older servers, `CLUSTER SLOTS`, turned into the
//! slot map's ranges.

use std::sync::Arc;

use redis::Value;

use super::slot_map::{Addrs, SlotRange};
use crate::addr::join_addr;

/// A string reply's text (bulk, simple or verbatim), as redis-rs converts it.
fn text(v: &Value) -> Option<String> {
    redis::from_redis_value_ref(v).ok()
}

/// An address the client can connect to: not empty, not `?` (a node whose endpoint is
/// unknown).
fn usable(host: &str) -> bool {
    !host.is_empty() && host != "?"
}

/// `CLUSTER SLOTS`: `[start, end, master, replica...]` per range, each node
/// `[host, port, id, ...]`. Failed replicas are left out by the server.
pub(super) fn parse_cluster_slots(value: &Value) -> Option<Vec<SlotRange>> {
    let Value::Array(rows) = value else {
        return None;
    };
    let node = |v: &Value| slots_node(v).map(|(addr, _)| addr);
    let mut ranges = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(items) = row else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), master, replicas @ ..] = items.as_slice() else {
            return None;
        };
        let replicas: Vec<Arc<str>> = replicas
            .iter()
            .filter_map(node)
            .filter(|addr| usable(addr.rsplit_once(':').map_or("", |(h, _)| h)))
            .map(Arc::from)
            .collect();
        ranges.push(SlotRange {
            start: u16::try_from(*start).ok()?,
            end: u16::try_from(*end).ok()?,
            master: Arc::from(node(master)?),
            replicas: Arc::from(replicas),
        });
    }
    ranges.sort_by_key(|r| r.start);
    Some(ranges)
}

/// A node of a `CLUSTER SLOTS` row, `[host, port, id, ...]`: its address and id.
fn slots_node(v: &Value) -> Option<(String, Option<String>)> {
    let Value::Array(fields) = v else {
        return None;
    };
    let host = fields.first().and_then(text)?;
    let Some(Value::Int(port)) = fields.get(1) else {
        return None;
    };
    let id = fields.get(2).and_then(text);
    Some((join_addr(&host, u16::try_from(*port).ok()?), id))
}

/// The key/value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .map(|kv| match kv {
                [k, v] => Some((text(k)?, v)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| Some((text(k)?, v))).collect(),
        _ => None,
    }
}

/// `CLUSTER SHARDS`: per shard, its slots (start/end pairs) and nodes (`endpoint` or `ip`,
/// `port` or, on TLS, `tls-port`, `role`, `health`). Only replicas whose health is `online`
/// serve reads (not `loading` or `failed`). Shards without slots are left out.
pub(super) fn parse_cluster_shards(value: &Value, tls: bool) -> Option<Vec<SlotRange>> {
    let Value::Array(shards) = value else {
        return None;
    };
    let mut ranges = Vec::new();
    for shard in shards {
        let fields = pairs(shard)?;
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let Some(Value::Array(slots)) = field("slots") else {
            return None;
        };
        let Some(Value::Array(nodes)) = field("nodes") else {
            return None;
        };
        let mut master = None;
        let mut replicas: Vec<Arc<str>> = Vec::new();
        for node in nodes {
            let Some(node) = shard_node(node, tls)? else {
                continue;
            };
            match node.role.as_deref() {
                Some("master") => master = Some(node.addr),
                Some("replica") if node.online => replicas.push(node.addr),
                _ => {}
            }
        }
        let Some(master) = master else {
            continue;
        };
        replicas.sort();
        let replicas: Addrs = Arc::from(replicas);
        for pair in slots.chunks(2) {
            let [Value::Int(start), Value::Int(end)] = pair else {
                return None;
            };
            ranges.push(SlotRange {
                start: u16::try_from(*start).ok()?,
                end: u16::try_from(*end).ok()?,
                master: master.clone(),
                replicas: replicas.clone(),
            });
        }
    }
    ranges.sort_by_key(|r| r.start);
    Some(ranges)
}

/// One node of a `CLUSTER SHARDS` shard.
struct ShardNode {
    addr: Arc<str>,
    role: Option<String>,
    online: bool,
    id: Option<String>,
}

/// Reads a node of a `CLUSTER SHARDS` shard: `None` when malformed, `Some(None)` when it has no
/// address the client can use.
fn shard_node(node: &Value, tls: bool) -> Option<Option<ShardNode>> {
    let node = pairs(node)?;
    let get = |name: &str| node.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let int = |name: &str| match get(name) {
        Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|p| *p != 0),
        _ => None,
    };
    let host = get("endpoint")
        .and_then(text)
        .filter(|h| usable(h))
        .or_else(|| get("ip").and_then(text).filter(|h| usable(h)));
    let port = if tls {
        int("tls-port").or_else(|| int("port"))
    } else {
        int("port").or_else(|| int("tls-port"))
    };
    let (Some(host), Some(port)) = (host, port) else {
        return Some(None);
    };
    Some(Some(ShardNode {
        addr: Arc::from(join_addr(&host, port)),
        role: get("role").and_then(text),
        online: get("health").and_then(text).as_deref() == Some("online"),
        id: get("id").and_then(text),
    }))
}

/// The node id of each address in a `CLUSTER SHARDS` (`shards`) or `CLUSTER SLOTS` reply, for
/// zone maps that name nodes by id.
pub(super) fn node_ids(value: &Value, shards: bool, tls: bool) -> Vec<(Arc<str>, String)> {
    let Value::Array(rows) = value else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for row in rows {
        if shards {
            let Some(fields) = pairs(row) else { continue };
            let Some((_, Value::Array(nodes))) = fields.iter().find(|(k, _)| k == "nodes") else {
                continue;
            };
            for node in nodes.iter().filter_map(|n| shard_node(n, tls).flatten()) {
                if let Some(id) = node.id {
                    ids.push((node.addr, id));
                }
            }
        } else if let Value::Array(items) = row {
            for (addr, id) in items.iter().skip(2).filter_map(slots_node) {
                if let Some(id) = id {
                    ids.push((Arc::from(addr), id));
                }
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk(&format!("id{port}")),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(14),
            bulk("health"),
            bulk(health),
        ])
    }

    #[test]
    fn shards_give_masters_and_online_replicas() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![Value::Int(5461), Value::Int(10922)]),
                bulk("nodes"),
                Value::Array(vec![
                    node(7102, "master", "online"),
                    node(7104, "replica", "online"),
                    node(7107, "replica", "loading"),
                    node(7108, "replica", "failed"),
                ]),
            ]),
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(5460),
                    Value::Int(10923),
                    Value::Int(16383),
                ]),
                bulk("nodes"),
                Value::Array(vec![node(7101, "master", "online")]),
            ]),
            // A master without slots (a spare) is not in the map.
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![]),
                bulk("nodes"),
                Value::Array(vec![node(7109, "master", "online")]),
            ]),
        ]);
        let ranges = parse_cluster_shards(&reply, false).unwrap();
        let rows: Vec<(u16, u16, &str, Vec<&str>)> = ranges
            .iter()
            .map(|r| {
                (
                    r.start,
                    r.end,
                    &*r.master,
                    r.replicas.iter().map(|r| &**r).collect(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, 5460, "127.0.0.1:7101", vec![]),
                (5461, 10922, "127.0.0.1:7102", vec!["127.0.0.1:7104"]),
                (10923, 16383, "127.0.0.1:7101", vec![]),
            ]
        );
        // Zone maps may name nodes by id: every node with an address has one.
        let ids = node_ids(&reply, true, false);
        assert!(ids.contains(&(Arc::from("127.0.0.1:7104"), "id7104".to_owned())));
        assert!(ids.contains(&(Arc::from("127.0.0.1:7101"), "id7101".to_owned())));
        assert_eq!(ids.len(), 6, "{ids:?}");
        assert!(node_ids(&Value::Nil, true, false).is_empty());
        assert!(parse_cluster_shards(&Value::Nil, false).is_none());
        assert!(parse_cluster_shards(&Value::Array(vec![bulk("x")]), false).is_none());
    }

    #[test]
    fn shards_pick_the_tls_port_on_tls() {
        let mut fields = match node(7102, "master", "online") {
            Value::Array(f) => f,
            _ => unreachable!(),
        };
        fields.extend([bulk("tls-port"), Value::Int(8102)]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("slots"),
            Value::Array(vec![Value::Int(0), Value::Int(16383)]),
            bulk("nodes"),
            Value::Array(vec![Value::Array(fields)]),
        ])]);
        let master = |tls| parse_cluster_shards(&reply, tls).unwrap()[0].master.clone();
        assert_eq!(&*master(true), "127.0.0.1:8102");
        assert_eq!(&*master(false), "127.0.0.1:7102");
    }
}
