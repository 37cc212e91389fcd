//! Mosquitto's dynamic-security plugin as the broker-side enforcement of identities: each
//! enrolled agent becomes a dynsec client bound to its client id, with a role that lets it
//! publish only its own upstream topics and subscribe only to its own downstream ones; a
//! revoked identity's client is deleted, which also disconnects it. The collector (a dynsec
//! admin) gives itself the role it needs before subscribing.
//!
//! At start the collector asks the broker what it holds (`listClients`, `listRoles`, paged)
//! and sends only the difference ([`reconcile`]) instead of every identity (docs/benchmarks.md,
//! "dynsec: a collector start against a provisioned Mosquitto"). Commands are
//! built here without I/O; [`run`] and [`list`] do the I/O.

use super::{Agent, Registry};
use crate::config::MqttConfig;
use crate::metrics::Metrics;
use dozor_proto::{Kind, client_id, topic, username};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The plugin's command topic.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where the plugin answers (Mosquitto 2.0 shows every answer to every subscribed admin).
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Commands per published message (the plugin handles a list per message).
const BATCH: usize = 100;
/// Clients or roles asked for per listing command. Verbose roles carry their ACLs (about
/// 1 KB each): 200 stay far below the 1 MiB packet limit of broker and collector
/// (`config::MAX_PACKET`, which the listing connection has too).
const PAGE: usize = 200;
/// How long the broker may stay silent while listing (connecting, or answering one page)
/// before the collector gives up and sends the full identity set instead.
pub const LISTING_BOUND: Duration = Duration::from_secs(20);

fn role_name(mo: &str, host: &str) -> String {
    format!("dozor-agent:{mo}:{host}")
}

/// The collector's own role: read every upstream message, write acks.
pub fn collector_commands(collector_user: &str) -> Value {
    json!({"commands": [
        {"command": "createRole", "rolename": "dozor-collector", "acls": [
            {"acltype": "subscribePattern", "topic": "dozor/v1/#", "allow": true, "priority": 0},
            {"acltype": "publishClientReceive", "topic": "dozor/v1/#", "allow": true, "priority": 0},
            {"acltype": "publishClientSend", "topic": "dozor/v1/+/+/ack", "allow": true, "priority": 0},
            {"acltype": "publishClientSend", "topic": "dozor/v1/+/+/cfg", "allow": true, "priority": 0}
        ]},
        {"command": "addClientRole", "username": collector_user, "rolename": "dozor-collector", "priority": 10}
    ]})
}

/// The ACLs of an agent's role: it may publish its own upstream kinds (live and replay) and
/// subscribe to its own downstream ones.
fn agent_acls(a: &Agent) -> Vec<Value> {
    let publish = dozor_proto::UPSTREAM.map(|k| acl(a, "publishClientSend", k));
    let subscribe = [Kind::Ack, Kind::Cfg].map(|k| acl(a, "subscribeLiteral", k));
    publish.into_iter().chain(subscribe).collect()
}

fn acl(a: &Agent, acltype: &str, k: Kind) -> Value {
    json!({"acltype": acltype, "topic": topic(&a.mo, &a.host, k), "allow": true, "priority": 0})
}

fn create_role(a: &Agent) -> Value {
    json!({"command": "createRole", "rolename": role_name(&a.mo, &a.host), "acls": agent_acls(a)})
}

fn create_client(a: &Agent) -> Value {
    json!({
        "command": "createClient",
        "username": username(&a.mo, &a.host),
        "password": a.secret.mqtt_password(),
        "clientid": client_id(&a.mo, &a.host),
        "roles": [{"rolename": role_name(&a.mo, &a.host)}],
    })
}

fn add_role_acl(a: &Agent, mut acl: Value) -> Value {
    acl["command"] = json!("addRoleACL");
    acl["rolename"] = json!(role_name(&a.mo, &a.host));
    acl
}

/// Commands creating one agent's role and client. A role created before the replay topics
/// existed gets them added (the full sync, sent when the broker cannot be listed, runs this
/// for every identity; the plugin refuses what already exists, harmlessly).
pub fn create_agent(a: &Agent) -> Vec<Value> {
    let upgrade = dozor_proto::REPLAY.map(|k| add_role_acl(a, acl(a, "publishClientSend", k)));
    [create_role(a), create_client(a)]
        .into_iter()
        .chain(upgrade)
        .collect()
}

/// Commands removing a revoked agent (deleting the client disconnects it).
pub fn delete_agent(a: &Agent) -> [Value; 2] {
    [
        json!({"command": "deleteClient", "username": username(&a.mo, &a.host)}),
        json!({"command": "deleteRole", "rolename": role_name(&a.mo, &a.host)}),
    ]
}

/// What changed between two registries, as commands (every active identity when `before` is
/// `None`: a full sync; "already exists" answers are harmless).
pub fn diff(before: Option<&Registry>, now: &Registry) -> Vec<Value> {
    let mut out = Vec::new();
    for a in now.agents() {
        let prev = before.and_then(|b| b.get(&a.mo, &a.host));
        match (prev, a.revoked) {
            (None, false) => out.extend(create_agent(a)),
            (Some(p), true) if !p.revoked => out.extend(delete_agent(a)),
            (None, true) if before.is_none() => out.extend(delete_agent(a)),
            _ => {}
        }
    }
    out
}

/// What the broker's plugin holds, from verbose `listClients` and `listRoles` answers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Each client's username and the names of its roles.
    pub clients: HashMap<String, HashSet<String>>,
    /// Each role's name and its ACLs as (acltype, topic).
    pub roles: HashMap<String, HashSet<(String, String)>>,
}

/// One answered page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub roles: bool,
    /// Entries this page held.
    pub got: usize,
    /// Entries the broker holds in all (`totalCount`).
    pub total: usize,
}

impl Listing {
    /// Adds one response message of the plugin (`{"responses": [...]}`) to the listing; the
    /// pages it answered. The plugin shows every admin's answers to every admin: responses to
    /// other commands, or to listings without our `tag` as correlation data, are skipped. An
    /// error answer to our listing, or one without its data, is an error naming it.
    pub fn add(&mut self, message: &[u8], tag: &str) -> Result<Vec<Page>, String> {
        let v: Value =
            serde_json::from_slice(message).map_err(|e| format!("response not JSON: {e}"))?;
        let mut pages = Vec::new();
        for r in v["responses"].as_array().into_iter().flatten() {
            let roles = match r["command"].as_str() {
                Some("listClients") => false,
                Some("listRoles") => true,
                _ => continue,
            };
            if r["correlationData"].as_str() != Some(tag) {
                continue;
            }
            if let Some(e) = r["error"].as_str() {
                return Err(format!("{}: {e}", r["command"]));
            }
            let data = &r["data"];
            let total = data["totalCount"]
                .as_u64()
                .ok_or_else(|| format!("{}: no data.totalCount", r["command"]))?;
            let list = data[if roles { "roles" } else { "clients" }]
                .as_array()
                .ok_or_else(|| format!("{}: no list", r["command"]))?;
            for e in list {
                if roles {
                    let Some(name) = e["rolename"].as_str() else {
                        continue;
                    };
                    let acls = e["acls"].as_array().into_iter().flatten().filter_map(|a| {
                        Some((
                            a["acltype"].as_str()?.to_string(),
                            a["topic"].as_str()?.to_string(),
                        ))
                    });
                    self.roles.insert(name.to_string(), acls.collect());
                } else {
                    let Some(name) = e["username"].as_str() else {
                        continue;
                    };
                    let roles = e["roles"].as_array().into_iter().flatten();
                    let roles = roles.filter_map(|r| Some(r["rolename"].as_str()?.to_string()));
                    self.clients.insert(name.to_string(), roles.collect());
                }
            }
            pages.push(Page {
                roles,
                got: list.len(),
                total: total as usize,
            });
        }
        Ok(pages)
    }
}

/// The listing command for one page.
fn list_command(roles: bool, offset: usize, tag: &str) -> Vec<u8> {
    let command = if roles { "listRoles" } else { "listClients" };
    let v = json!({"commands": [{
        "command": command, "verbose": true, "count": PAGE, "offset": offset,
        "correlationData": tag,
    }]});
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The commands that bring the broker, as listed, in step with the registry: a missing role
/// or client is created, a role missing some of its ACLs gets them, a client without its role
/// gets it back, a revoked identity still present is deleted. What matches is left alone, and
/// so are the broker's other clients and roles.
pub fn reconcile(now: &Registry, broker: &Listing) -> Vec<Value> {
    let mut out = Vec::new();
    for a in now.agents() {
        let (user, role) = (username(&a.mo, &a.host), role_name(&a.mo, &a.host));
        if a.revoked {
            if broker.clients.contains_key(&user) {
                out.push(json!({"command": "deleteClient", "username": user}));
            }
            if broker.roles.contains_key(&role) {
                out.push(json!({"command": "deleteRole", "rolename": role}));
            }
            continue;
        }
        match broker.roles.get(&role) {
            None => out.push(create_role(a)),
            Some(have) => {
                for acl in agent_acls(a) {
                    let key = (
                        acl["acltype"].as_str().unwrap_or_default().to_string(),
                        acl["topic"].as_str().unwrap_or_default().to_string(),
                    );
                    if !have.contains(&key) {
                        out.push(add_role_acl(a, acl));
                    }
                }
            }
        }
        match broker.clients.get(&user) {
            None => out.push(create_client(a)),
            Some(roles) if !roles.contains(&role) => out.push(json!({
                "command": "addClientRole", "username": user, "rolename": role
            })),
            Some(_) => {}
        }
    }
    out
}

/// Options of the short connection that lists the broker: the collector's credentials and
/// TLS, a client id of its own (`{client_id}-dynsec`), a clean session.
pub fn listing_options(cfg: &MqttConfig, host: &str, port: u16) -> MqttOptions {
    let mut o = cfg.connection_options(format!("{}-dynsec", cfg.client_id), host, port);
    o.set_clean_session(true);
    o
}

/// Lists the broker's dynsec clients and roles on a connection of its own, page by page.
/// While the broker cannot be reached it keeps trying (nothing could be provisioned meanwhile
/// anyway); once connected, an error when the broker refuses, drops the connection a third
/// time, or stays silent for [`LISTING_BOUND`].
pub async fn list(options: MqttOptions) -> Result<Listing, String> {
    let (client, mut events) = AsyncClient::new(options, 16);
    let base = format!("dozor-{}-{}", std::process::id(), crate::clock::now_ms());
    // Answers to an earlier connection's requests (resent by the client) carry its tag.
    let mut tag = format!("{base}-0");
    let mut listing = Listing::default();
    let mut seen = [0usize; 2];
    let mut done = [false; 2];
    let mut connected = false;
    let mut drops = 0;
    let result = loop {
        let ev = match tokio::time::timeout(LISTING_BOUND, events.poll()).await {
            Err(_) if connected => break Err(format!("no answer within {LISTING_BOUND:?}")),
            // Mosquitto disconnects every client of a user whose roles change, and the
            // collector gives its own user its role at each connect: list again from the
            // start on a new connection, a few times.
            Ok(Err(e)) if connected && drops >= 3 => {
                break Err(format!("connection lost {drops} times, last: {e}"));
            }
            Ok(Err(e)) if connected => {
                tracing::debug!(error = %e, "dynsec listing: connection lost; listing again");
                drops += 1;
                connected = false;
                listing = Listing::default();
                seen = [0; 2];
                done = [false; 2];
                tag = format!("{base}-{drops}");
                continue;
            }
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "dynsec listing: broker not reachable yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                connected = true;
                if let Err(e) = client.subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce).await {
                    break Err(format!("subscribe: {e}"));
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    break Err(format!("not allowed to read {RESPONSE_TOPIC}"));
                }
                let first = [false, true].map(|roles| list_command(roles, 0, &tag));
                for p in first {
                    if let Err(e) = client
                        .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, p)
                        .await
                    {
                        return Err(format!("publish: {e}"));
                    }
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == RESPONSE_TOPIC => {
                let pages = match listing.add(&p.payload, &tag) {
                    Ok(pages) => pages,
                    Err(e) => break Err(e),
                };
                for page in pages {
                    let i = usize::from(page.roles);
                    seen[i] += page.got;
                    if page.got == 0 || seen[i] >= page.total {
                        done[i] = true;
                    } else {
                        let next = list_command(page.roles, seen[i], &tag);
                        if let Err(e) = client
                            .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, next)
                            .await
                        {
                            return Err(format!("publish: {e}"));
                        }
                    }
                }
                if done == [true, true] {
                    break Ok(listing);
                }
            }
            _ => {}
        }
    };
    let _ = client.disconnect().await;
    result
}

/// Payloads of at most [`BATCH`] commands each.
pub fn payloads(commands: Vec<Value>) -> Vec<Vec<u8>> {
    commands
        .chunks(BATCH)
        .map(|c| serde_json::to_vec(&json!({"commands": c})).unwrap_or_default())
        .collect()
}

/// Keeps Mosquitto's dynsec clients in step with the registry: at start the difference
/// between the registry and what the broker lists (the full identity set when it cannot be
/// listed within [`LISTING_BOUND`]), then each change (enrollment, revocation) as it happens.
pub async fn run(
    client: AsyncClient,
    listing: MqttOptions,
    mut registry: watch::Receiver<Arc<Registry>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let listed = tokio::select! {
        _ = cancel.cancelled() => return,
        l = list(listing) => l,
    };
    let mut before: Option<Arc<Registry>> = None;
    loop {
        let now = registry.borrow_and_update().clone();
        let commands = match (&before, &listed) {
            (Some(b), _) => diff(Some(b), &now),
            (None, Ok(l)) => {
                tracing::info!(
                    clients = l.clients.len(),
                    roles = l.roles.len(),
                    "broker identities listed (dynsec)"
                );
                reconcile(&now, l)
            }
            (None, Err(why)) => {
                tracing::warn!(
                    %why,
                    "cannot list the broker's dynsec identities; sending every identity"
                );
                diff(None, &now)
            }
        };
        if !commands.is_empty() {
            tracing::info!(
                commands = commands.len(),
                "provisioning broker identities (dynsec)"
            );
        }
        for c in &commands {
            metrics.dynsec_sent(c["command"].as_str().unwrap_or_default());
        }
        for p in payloads(commands) {
            if let Err(e) = client
                .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, p)
                .await
            {
                tracing::warn!(error = %e, "dynsec command not sent");
            }
        }
        before = Some(now);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = registry.changed() => if r.is_err() { break },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dozor_proto::auth::Secret;

    #[test]
    fn agents_are_created_then_deleted_on_revocation() {
        let mut r = Registry::default();
        r.insert(Agent::new("mo1", "pc-1", &Secret([1; 32])));
        let full = diff(None, &r);
        assert_eq!(
            full.len(),
            5,
            "role, client, the replay ACLs added to an older role"
        );
        for (cmd, kind) in full[2..]
            .iter()
            .zip(["birth-replay", "hb-replay", "probe-replay"])
        {
            assert_eq!(cmd["command"], "addRoleACL");
            assert_eq!(cmd["rolename"], "dozor-agent:mo1:pc-1");
            assert_eq!(cmd["acltype"], "publishClientSend");
            assert_eq!(cmd["topic"], format!("dozor/v1/mo1/pc-1/{kind}"));
        }
        assert_eq!(full[1]["clientid"], "dozor-mo1-pc-1");
        assert_eq!(full[1]["username"], "mo1/pc-1");
        let acls = full[0]["acls"].as_array().unwrap();
        assert!(acls.iter().all(|a| {
            a["topic"]
                .as_str()
                .unwrap()
                .starts_with("dozor/v1/mo1/pc-1/")
        }));
        let published: Vec<&str> = acls
            .iter()
            .filter(|a| a["acltype"] == "publishClientSend")
            .map(|a| a["topic"].as_str().unwrap().rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            published,
            [
                "birth",
                "state",
                "hb",
                "probe",
                "birth-replay",
                "hb-replay",
                "probe-replay"
            ]
        );
        // Agents never get to write their own ack.
        assert!(!acls.iter().any(|a| a["acltype"] == "publishClientSend"
            && a["topic"].as_str().unwrap().ends_with("/ack")));
        assert!(diff(Some(&r), &r).is_empty());
        let mut revoked = r.clone();
        let mut a = Agent::new("mo1", "pc-1", &Secret([1; 32]));
        a.revoked = true;
        revoked.insert(a);
        let d = diff(Some(&r), &revoked);
        assert_eq!(d[0]["command"], "deleteClient");
        assert_eq!(payloads(vec![json!({}); 250]).len(), 3);
    }

    /// The plugin's verbose answers for what `commands` would have created.
    fn answers(commands: &[Value]) -> Vec<u8> {
        let roles: Vec<Value> = commands
            .iter()
            .filter(|c| c["command"] == "createRole")
            .map(|c| json!({"rolename": c["rolename"], "acls": c["acls"]}))
            .collect();
        let clients: Vec<Value> = commands
            .iter()
            .filter(|c| c["command"] == "createClient")
            .map(|c| json!({"username": c["username"], "clientid": c["clientid"], "roles": c["roles"], "groups": []}))
            .collect();
        serde_json::to_vec(&json!({"responses": [
            {"command": "listClients", "data": {"totalCount": clients.len() + 1, "clients": clients}, "correlationData": "t"},
            {"command": "listRoles", "data": {"totalCount": roles.len(), "roles": roles}, "correlationData": "t"},
        ]}))
        .unwrap()
    }

    fn fleet(n: usize) -> Registry {
        let mut r = Registry::default();
        for i in 0..n {
            r.insert(Agent::new(
                "mo1",
                &format!("pc-{i}"),
                &Secret([i as u8; 32]),
            ));
        }
        r
    }

    #[test]
    fn a_provisioned_broker_gets_nothing_and_a_bare_one_gets_each_identity_once() {
        let r = fleet(3);
        let bare = reconcile(&r, &Listing::default());
        assert_eq!(bare.len(), 6, "a role and a client per identity: {bare:?}");
        let mut l = Listing::default();
        let pages = l.add(&answers(&bare), "t").unwrap();
        assert_eq!(
            pages,
            [
                Page {
                    roles: false,
                    got: 3,
                    total: 4
                },
                Page {
                    roles: true,
                    got: 3,
                    total: 3
                }
            ]
        );
        assert!(reconcile(&r, &l).is_empty(), "{:?}", reconcile(&r, &l));
        // Other clients and roles on the broker (its admin) are left alone.
        l.clients
            .insert("admin".into(), HashSet::from(["admin".to_string()]));
        assert!(reconcile(&r, &l).is_empty());
    }

    #[test]
    fn only_what_the_broker_lacks_is_sent_and_revoked_identities_are_deleted() {
        let mut r = fleet(3);
        let mut l = Listing::default();
        l.add(&answers(&reconcile(&r, &Listing::default())), "t")
            .unwrap();
        // pc-0 deleted behind the collector's back; pc-1's role lost a replay ACL and its
        // client the role; pc-2 revoked while still on the broker.
        l.clients.remove("mo1/pc-0");
        l.roles.remove("dozor-agent:mo1:pc-0");
        let acls = l.roles.get_mut("dozor-agent:mo1:pc-1").unwrap();
        acls.remove(&(
            "publishClientSend".into(),
            "dozor/v1/mo1/pc-1/hb-replay".into(),
        ));
        l.clients.get_mut("mo1/pc-1").unwrap().clear();
        let mut revoked = Agent::new("mo1", "pc-2", &Secret([2; 32]));
        revoked.revoked = true;
        r.insert(revoked);
        let mut got: Vec<String> = reconcile(&r, &l)
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["command"].as_str().unwrap(),
                    c.get("topic")
                        .or(c.get("username"))
                        .or(c.get("rolename"))
                        .unwrap()
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "addClientRole \"mo1/pc-1\"",
                "addRoleACL \"dozor/v1/mo1/pc-1/hb-replay\"",
                "createClient \"mo1/pc-0\"",
                "createRole \"dozor-agent:mo1:pc-0\"",
                "deleteClient \"mo1/pc-2\"",
                "deleteRole \"dozor-agent:mo1:pc-2\"",
            ]
        );
        // Once gone from the broker, a revoked identity costs nothing.
        l.clients.remove("mo1/pc-2");
        l.roles.remove("dozor-agent:mo1:pc-2");
        assert_eq!(reconcile(&r, &l).len(), 4);
    }

    #[test]
    fn listing_answers_are_read_page_by_page_and_errors_are_named() {
        let mut l = Listing::default();
        let page = |offset: usize| {
            let names: Vec<Value> = (offset..offset + 2)
                .map(|i| json!({"username": format!("u{i}"), "roles": []}))
                .collect();
            serde_json::to_vec(&json!({"responses": [
                {"command": "listClients", "data": {"totalCount": 4, "clients": names}, "correlationData": "t"}
            ]}))
            .unwrap()
        };
        assert_eq!(l.add(&page(0), "t").unwrap()[0].got, 2);
        assert_eq!(l.add(&page(2), "t").unwrap()[0].total, 4);
        assert_eq!(l.clients.len(), 4);
        let refused =
            br#"{"responses":[{"command":"listRoles","error":"Permission denied","correlationData":"t"}]}"#;
        assert!(l.add(&page(0), "another admin's").unwrap().is_empty());
        assert_eq!(
            l.add(refused, "t").unwrap_err(),
            "\"listRoles\": Permission denied"
        );
        assert!(
            l.add(b"not json", "t")
                .unwrap_err()
                .starts_with("response not JSON")
        );
        let other =
            br#"{"responses":[{"command":"createClient","error":"Client already exists"}]}"#;
        assert!(
            l.add(other, "t").unwrap().is_empty(),
            "answers to other commands are skipped"
        );
        let cmd: Value = serde_json::from_slice(&list_command(true, 400, "t")).unwrap();
        assert_eq!(
            cmd["commands"][0],
            json!({"command": "listRoles", "verbose": true, "count": PAGE, "offset": 400, "correlationData": "t"})
        );
    }
}
