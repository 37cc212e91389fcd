//! `DOZOR_*` environment overrides, applied to the raw TOML document before it is deserialized.
//!
//! Every option of the file is also a variable: its path in upper case, joined by `_`, after
//! `DOZOR_` (`store.influxdb.token` → `DOZOR_STORE_INFLUXDB_TOKEN`, `limits.max_hosts` →
//! `DOZOR_LIMITS_MAX_HOSTS`). The set of options is read from the raw structs themselves (their
//! serialized defaults), so a new option is a new variable without a table to keep in step.
//! Values are converted by the option's type: text as is, numbers and `true`/`false` parsed,
//! lists as a TOML array (`["iemk", "lis"]`, also how `[[alerts.channel]]` tables can be
//! given) or comma-separated words. Variables naming no option are ignored (the agent and the
//! command line read `DOZOR_*` too); a value of the wrong type is an error naming the variable.

use super::{ConfigError, RawConfig};
use serde_json::Value as Json;

/// What a variable's text is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Float,
    Bool,
    List,
}

/// One option that can be set from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOption {
    /// `DOZOR_STORE_INFLUXDB_TOKEN`.
    pub var: String,
    /// `["store", "influxdb", "token"]`.
    pub path: Vec<String>,
    kind: Kind,
}

/// Every option with its variable, from the defaults (optional sections included).
pub fn options() -> Vec<EnvOption> {
    let mut full = RawConfig::default();
    // Optional sections are absent by default; their keys are options all the same.
    full.store.influxdb = Some(crate::store::config::RawInflux::default());
    let json = serde_json::to_value(&full)
        .unwrap_or_else(|e| unreachable!("the raw config serializes to JSON: {e}"));
    let mut out = Vec::new();
    walk(&json, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Json, path: &mut Vec<String>, out: &mut Vec<EnvOption>) {
    let kind = match v {
        Json::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                walk(v, path, out);
                path.pop();
            }
            return;
        }
        // Absent optional values are text or paths (a test checks that every one accepts text).
        Json::Null | Json::String(_) => Kind::Text,
        Json::Bool(_) => Kind::Bool,
        Json::Number(n) if n.is_f64() => Kind::Float,
        Json::Number(_) => Kind::Integer,
        Json::Array(_) => Kind::List,
    };
    out.push(EnvOption {
        var: format!("DOZOR_{}", path.join("_").to_ascii_uppercase()),
        path: path.clone(),
        kind,
    });
}

/// Sets the options named by `DOZOR_*` variables of `vars` in `doc`, creating tables as needed.
/// Returns whether any was set.
pub fn apply(
    doc: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<bool, ConfigError> {
    let options = options();
    let mut any = false;
    for (var, text) in vars {
        if !var.starts_with("DOZOR_") {
            continue;
        }
        let Some(opt) = options.iter().find(|o| o.var == var) else {
            continue;
        };
        let value = convert(opt.kind, &text)
            .map_err(|m| ConfigError::Parse(format!("{var} ({}): {m}", opt.path.join("."))))?;
        let (leaf, tables) = opt
            .path
            .split_last()
            .unwrap_or_else(|| unreachable!("an option has a non-empty path"));
        let mut table = &mut *doc;
        for key in tables {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| {
                ConfigError::Parse(format!("{var}: {key} is not a table in the file"))
            })?;
        }
        table.insert(leaf.clone(), value);
        any = true;
    }
    Ok(any)
}

fn convert(kind: Kind, text: &str) -> Result<toml::Value, String> {
    let t = text.trim();
    Ok(match kind {
        Kind::Text => toml::Value::String(text.to_string()),
        Kind::Integer => toml::Value::Integer(
            t.parse()
                .map_err(|_| format!("{t:?} is not a whole number"))?,
        ),
        Kind::Float => toml::Value::Float(t.parse().map_err(|_| format!("{t:?} is not a number"))?),
        Kind::Bool => toml::Value::Boolean(match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("{t:?} is not true or false")),
        }),
        Kind::List if t.starts_with('[') => {
            let doc: toml::Table = toml::from_str(&format!("v = {t}"))
                .map_err(|e| format!("not a TOML array: {}", e.message()))?;
            doc.get("v")
                .cloned()
                .unwrap_or(toml::Value::Array(Vec::new()))
        }
        Kind::List => toml::Value::Array(
            t.split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(|w| toml::Value::String(w.to_string()))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_option_has_one_variable() {
        let opts = options();
        let mut names: Vec<&str> = opts.iter().map(|o| o.var.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "two options share a variable");
        for v in [
            "DOZOR_DATA_DIR",
            "DOZOR_MQTT_PASSWORD_FILE",
            "DOZOR_LIMITS_MAX_HOSTS",
            "DOZOR_STORE_INFLUXDB_TOKEN",
            "DOZOR_STORE_INFLUXDB_TOKEN_FILE",
            "DOZOR_STORE_INDICATORS_SUBSYSTEMS",
            "DOZOR_ALERTS_MO_UNREACHABLE_MIN_SHARE",
            "DOZOR_ALERTS_CHANNEL",
        ] {
            assert!(names.contains(&v), "{v} missing");
        }
    }

    #[test]
    fn every_option_accepts_its_variable() {
        // Each option set alone from a plausible text deserializes: the kinds are right, and
        // the absent optional values (null in the defaults) are indeed text.
        for o in options() {
            let text = match o.kind {
                Kind::Text => "x",
                Kind::Integer => "7",
                Kind::Float => "0.5",
                Kind::Bool => "true",
                Kind::List => "[]",
            };
            RawConfig::from_toml_env("", vars(&[(&o.var, text)]))
                .unwrap_or_else(|e| panic!("{}: {e}", o.var));
        }
    }

    #[test]
    fn variables_override_the_file() {
        let file = "[limits]\nmax_hosts = 10\n[store.influxdb]\nurl = \"http://i:8086\"\norg = \"o\"\nbucket = \"b\"\n";
        let raw = RawConfig::from_toml_env(
            file,
            vars(&[
                ("DOZOR_LIMITS_MAX_HOSTS", "20"),
                ("DOZOR_STORE_INFLUXDB_TOKEN", "secret"),
                ("DOZOR_HTTP_LISTEN", "127.0.0.1:9"),
                ("DOZOR_ALERTS_ENABLED", "false"),
                ("DOZOR_ALERTS_MO_CHANNEL_MIN_SHARE", "0.75"),
                ("DOZOR_STORE_INDICATORS_SUBSYSTEMS", "iemk, lis"),
                (
                    "DOZOR_ALERTS_CHANNEL",
                    r#"[{ type = "webhook", url = "http://h:1/x" }]"#,
                ),
                ("DOZOR_NOT_AN_OPTION", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(raw.limits.max_hosts, 20);
        assert_eq!(raw.http.listen, "127.0.0.1:9");
        assert!(!raw.alerts.enabled);
        assert!((raw.alerts.mo_channel.min_share - 0.75).abs() < 1e-9);
        assert_eq!(raw.store.indicators.subsystems, ["iemk", "lis"]);
        assert_eq!(raw.alerts.channel.len(), 1);
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.store.influx.unwrap().token, "secret");
        assert_eq!(cfg.limits.max_hosts, 20);
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        for (var, text) in [
            ("DOZOR_LIMITS_MAX_HOSTS", "many"),
            ("DOZOR_ALERTS_ENABLED", "perhaps"),
            ("DOZOR_STORE_GAP_FACTOR", "x"),
            ("DOZOR_ALERTS_CHANNEL", "[oops"),
        ] {
            let e = RawConfig::from_toml_env("", vars(&[(var, text)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(var), "{e:?} should name {var}");
        }
    }
}
