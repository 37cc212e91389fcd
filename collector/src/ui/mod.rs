//! The built-in web UI, in Russian: the region overview (`/`, live over server-sent events),
//! МО pages, host pages with history charts, incidents with acknowledge and silences, the
//! indicator table with downloads. Pages are askama templates (`collector/templates/`,
//! compiled with the binary, auto-escaped); charts are SVG drawn on the server (`svg`); a
//! little vanilla JS does live updates, sorting and filtering. No build step, no internet.
//!
//! Reading needs a viewer (the auth middleware sends a browser without a session to
//! `/login`); the acknowledge and silence forms call the JSON API with the session's CSRF
//! token and need an operator.

pub(crate) mod fmt;
mod history;
mod incidents;
mod indicators;
pub(crate) mod overview;
mod pages;
mod planned;
pub(crate) mod svg;
pub(crate) mod trends;

use crate::alerts::model::Incident;
use crate::auth::{Principal, Role};
use crate::roster::Roster;
use crate::state::Snapshot;
use crate::store::config::StoreConfig;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trends::Trends;

/// What the UI handlers share.
#[derive(Clone)]
pub(crate) struct UiState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub roster: Arc<Roster>,
    /// The alert service's incidents, oldest first (a function, so benchmarks need no
    /// alert service).
    pub incidents: Arc<dyn Fn() -> Arc<Vec<Incident>> + Send + Sync>,
    /// The SQLite store (`data_dir/dozor.db`).
    pub db: PathBuf,
    pub store: Arc<StoreConfig>,
    pub trends: Arc<Trends>,
    /// Ends the live-update streams when the collector stops.
    pub shutdown: CancellationToken,
    pub clock: crate::clock::Clock,
    /// Every planned work (the config's and the API's; a function, so benchmarks need no
    /// store).
    pub planned: Arc<dyn Fn() -> Arc<Vec<crate::store::planned::Entry>> + Send + Sync>,
}

impl UiState {
    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn incidents(&self) -> Arc<Vec<Incident>> {
        (self.incidents)()
    }

    fn planned(&self) -> Arc<Vec<crate::store::planned::Entry>> {
        (self.planned)()
    }

    fn tz(&self) -> chrono_tz::Tz {
        self.store.region_tz
    }

    /// The МО's name from the roster, else its OID.
    fn mo_name(&self, oid: &str) -> String {
        self.roster
            .get(oid)
            .map_or_else(|| oid.to_string(), |m| m.name.clone())
    }
}

/// The UI's routes (pages, assets, live updates) and the host history API.
pub(crate) fn router(state: UiState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/ui/events", get(pages::events))
        .route("/ui/app.css", get(css))
        .route("/ui/app.js", get(js))
        .route("/mo/{mo}", get(pages::mo))
        .route("/host/{mo}/{host}", get(pages::host))
        .route("/incidents", get(incidents::list))
        .route("/incidents/{id}", get(incidents::one))
        .route("/indicators", get(indicators::page))
        .route("/planned", get(planned::page))
        .route("/api/v1/hosts/{mo}/{host}/history", get(history::api))
        .with_state(state)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../templates/static/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../templates/static/app.js"),
    )
}

/// Who is looking, for the page header and the forms shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Viewer {
    /// Logged-in user (None when pages are public and nobody logged in).
    pub user: Option<String>,
    /// May acknowledge incidents and create silences.
    pub operator: bool,
    /// May add and delete planned works.
    pub admin: bool,
}

impl Viewer {
    pub(crate) fn of(p: Option<&Principal>) -> Viewer {
        Viewer {
            user: p.map(|p| p.name.clone()),
            operator: p.is_some_and(|p| p.role >= Role::Operator),
            admin: p.is_some_and(|p| p.role >= Role::Admin),
        }
    }
}

/// The acknowledgement of an incident (`"ack": {"by", "at_ms", "comment"}` of the alerts
/// API), when it has one. Read from the serialized incident, so the page works with and
/// without the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
}

pub(crate) fn ack_of(i: &Incident) -> Option<Ack> {
    let v = serde_json::to_value(i).ok()?;
    let a = v.get("ack")?;
    Some(Ack {
        by: a.get("by")?.as_str()?.to_string(),
        at_ms: a
            .get("at_ms")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0),
        comment: a
            .get("comment")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// A host as the live state makes it from a birth (tests of the UI's pure parts).
#[cfg(test)]
pub(crate) fn test_host(
    mo: &str,
    id: &str,
    role: dozor_proto::Role,
    now: i64,
) -> crate::state::Host {
    let birth = dozor_proto::Envelope {
        v: 1,
        mo: mo.into(),
        host: id.into(),
        inst: "i".into(),
        seq: 1,
        ts: now,
        replay: false,
        body: dozor_proto::Birth {
            agent_version: "t".into(),
            role,
            site: "Главный корпус".into(),
            hostname: id.to_uppercase(),
            os_name: "Astra Linux".into(),
            os_version: "1.7".into(),
            cpu_model: String::new(),
            cpu_count: 1,
            mem_total_bytes: 1,
            disks: Vec::new(),
            boot_time: (now - 86_400_000) / 1000,
            boot_id: "b".into(),
            seq_base: 1,
            interval_secs: 30,
            keepalive_secs: 30,
            prev_end: None,
            will_seq: None,
            targets: Vec::new(),
        },
    };
    let mut live = crate::state::LiveState::new(crate::state::StateConfig::default());
    live.apply(&dozor_proto::Message::Birth(birth), now, false, true)
        .unwrap();
    Arc::unwrap_or_clone(live.snapshot(now).hosts.remove(0))
}

/// Server-side rendering as the handlers do it, for the benchmark (`dozor-ui-bench`, feature
/// `sim`): not in the release binary.
#[cfg(feature = "sim")]
pub mod bench {
    use super::*;
    use askama::Template;

    fn state(snap: Arc<Snapshot>, roster: Arc<Roster>, db: &std::path::Path, now: i64) -> UiState {
        let (_tx, rx) = watch::channel(snap);
        UiState {
            snapshot: rx,
            roster,
            incidents: Arc::new(|| Arc::new(Vec::new())),
            db: db.to_path_buf(),
            store: Arc::new(StoreConfig::default()),
            trends: Arc::new(Trends::default()),
            shutdown: CancellationToken::new(),
            clock: Arc::new(move || now),
            planned: Arc::new(|| Arc::new(Vec::new())),
        }
    }

    /// The overview page (`GET /`) of `snap`, as HTML.
    pub fn overview_html(snap: Arc<Snapshot>, roster: Arc<Roster>, now: i64) -> String {
        let s = state(snap, roster, std::path::Path::new(""), now);
        s.trends.sample(&s.snapshot.borrow());
        let page = pages::OverviewPage {
            v: Viewer::default(),
            o: pages::build_overview(&s),
            q: String::new(),
            found: Vec::new(),
            searched: false,
        };
        page.render().unwrap_or_default()
    }

    /// The host page (`GET /host/{mo}/{host}?range=…`) over the last `days` days, read from
    /// the store at `db`: the HTML and the number of history points drawn.
    pub fn host_page_html(
        db: &std::path::Path,
        roster: Arc<Roster>,
        mo: &str,
        host: &str,
        days: i64,
        now: i64,
    ) -> Result<(String, usize), crate::store::StoreError> {
        let s = state(Arc::new(Snapshot::default()), roster, db, now);
        let c = crate::store::history::open(db)?;
        let h =
            crate::store::history::load(&c, mo, host, now - days * 86_400_000, now, now, 2.5, &[])?;
        let points = h.as_ref().map_or(0, |h| {
            h.resources.len()
                + h.availability.len()
                + h.probes.iter().map(|p| p.points.len()).sum::<usize>()
        });
        let page = pages::host_page(
            &s,
            Viewer::default(),
            mo,
            host,
            None,
            h.as_ref(),
            "90d",
            "90 дней",
            now,
        );
        Ok((page.render().unwrap_or_default(), points))
    }
}
