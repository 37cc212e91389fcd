//! Mosquitto's dynamic-security plugin as the broker-side enforcement of identities: each
//! enrolled agent becomes a dynsec client bound to its client id, with a role that lets it
//! publish only its own upstream topics and subscribe only to its own downstream ones; a
//! revoked identity's client is deleted, which also disconnects it. The collector (a dynsec
//! admin) gives itself the role it needs before subscribing. Commands are built here without
//! I/O; `run` publishes them.

use super::{Agent, Registry};
use dozor_proto::{Kind, client_id, topic, username};
use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The plugin's command topic.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Commands per published message (the plugin handles a list per message).
const BATCH: usize = 100;

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

/// Commands creating one agent's role and client: it may publish its own upstream kinds
/// (live and replay) and subscribe to its own downstream ones. A role created before the
/// replay topics existed gets them added (the full sync at start runs this for every identity;
/// the plugin refuses what already exists, harmlessly).
pub fn create_agent(a: &Agent) -> Vec<Value> {
    let acl = |k| json!({"acltype": "publishClientSend", "topic": topic(&a.mo, &a.host, k), "allow": true, "priority": 0});
    let publish = dozor_proto::UPSTREAM.map(acl);
    let subscribe = [Kind::Ack, Kind::Cfg].map(|k| {
        json!({"acltype": "subscribeLiteral", "topic": topic(&a.mo, &a.host, k), "allow": true, "priority": 0})
    });
    let acls: Vec<Value> = publish.into_iter().chain(subscribe).collect();
    let upgrade = dozor_proto::REPLAY.map(|k| {
        let mut add = acl(k);
        add["command"] = json!("addRoleACL");
        add["rolename"] = json!(role_name(&a.mo, &a.host));
        add
    });
    [
        json!({"command": "createRole", "rolename": role_name(&a.mo, &a.host), "acls": acls}),
        json!({
            "command": "createClient",
            "username": username(&a.mo, &a.host),
            "password": a.secret.mqtt_password(),
            "clientid": client_id(&a.mo, &a.host),
            "roles": [{"rolename": role_name(&a.mo, &a.host)}],
        }),
    ]
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

/// Payloads of at most [`BATCH`] commands each.
pub fn payloads(commands: Vec<Value>) -> Vec<Vec<u8>> {
    commands
        .chunks(BATCH)
        .map(|c| serde_json::to_vec(&json!({"commands": c})).unwrap_or_default())
        .collect()
}

/// Keeps Mosquitto's dynsec clients in step with the registry: a full sync at start, then
/// each change (enrollment, revocation) as it happens.
pub async fn run(
    client: AsyncClient,
    mut registry: watch::Receiver<Arc<Registry>>,
    cancel: CancellationToken,
) {
    let mut before: Option<Arc<Registry>> = None;
    loop {
        let now = registry.borrow_and_update().clone();
        let commands = diff(before.as_deref(), &now);
        if !commands.is_empty() {
            tracing::info!(
                commands = commands.len(),
                "provisioning broker identities (dynsec)"
            );
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
}
