//! docs/api.md documents every route: each `.route("PATH", get(..).post(..))` of the collector's
//! routers must appear there as a heading ``### `METHOD PATH` ``, and every such heading must be
//! a route (so the document cannot drift either way).

use std::collections::BTreeSet;
use std::path::Path;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(METHOD, PATH)` of every `.route(` in the Rust files under `dir`.
fn routes_in(dir: &Path, out: &mut BTreeSet<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            routes_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // Test servers (notifier captures) are not the collector's API.
            && !path.ends_with("tests.rs")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices(".route(\"") {
                out.extend(parse_route(&text[at + ".route(".len()..]));
            }
        }
    }
}

/// From `"PATH", get(a).post(b))…`: the path and the methods up to the closing parenthesis.
fn parse_route(s: &str) -> Vec<(String, String)> {
    let s = &s[1..];
    let end = s.find('"').unwrap();
    let path = s[..end].to_string();
    let mut depth = 1;
    let mut args_end = s.len();
    for (i, c) in s[end..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args_end = end + i;
                    break;
                }
            }
            _ => {}
        }
    }
    let args = &s[end + 1..args_end];
    let mut out = Vec::new();
    for (i, _) in args.match_indices('(') {
        let word: String = args[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if METHODS.contains(&word.as_str()) {
            out.push((word.to_ascii_uppercase(), path.clone()));
        }
    }
    assert!(!out.is_empty(), "no method found for route {path:?}");
    out
}

/// `(METHOD, PATH)` of every ``### `METHOD PATH` `` heading.
fn documented(doc: &str) -> BTreeSet<(String, String)> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .filter_map(|h| {
            let (m, p) = h.split_once(' ')?;
            Some((m.to_string(), p.to_string()))
        })
        .collect()
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut routes = BTreeSet::new();
    routes_in(&root.join("src"), &mut routes);
    assert!(
        routes.len() >= 15,
        "the route scan found only {routes:?}: has the router syntax changed?"
    );
    let doc = std::fs::read_to_string(root.join("../docs/api.md")).unwrap();
    let docs = documented(&doc);
    let missing: Vec<_> = routes.difference(&docs).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/api.md (add a `### `METHOD PATH`` section): {missing:?}"
    );
    let stale: Vec<_> = docs.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "docs/api.md documents routes the collector does not serve: {stale:?}"
    );
}

#[test]
fn the_route_scan_reads_chained_methods() {
    assert_eq!(
        parse_route("\"/api/v1/silences/{id}\", get(silence).delete(delete_silence))\n.route("),
        [
            ("GET".to_string(), "/api/v1/silences/{id}".to_string()),
            ("DELETE".to_string(), "/api/v1/silences/{id}".to_string())
        ]
    );
}
