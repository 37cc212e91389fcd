//! Who may use the HTTP API: roles, the route → role decision, session and token expiry (all
//! I/O-free, clock passed in), and the [`Authenticator`] trait (local users now, LDAP later).
//! `db` keeps users, sessions, API tokens and the audit log in `auth.db`; `http` is the
//! enforcing middleware and the login, user, token and audit routes.

pub mod db;
pub(crate) mod http;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// A user's or token's role; each includes the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the status page, the API and `/metrics`.
    Viewer,
    /// Also creates and deletes silences (and acknowledges).
    Operator,
    /// Also manages users, API tokens and enrollment tokens, reads the audit log.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Anyone (agents' enrollment, liveness, the login itself).
    Public,
    /// At least this role.
    Role(Role),
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// 401: nobody authenticated, and the route needs somebody.
    Unauthenticated,
    /// 403: authenticated, but the role is too low.
    Forbidden,
}

/// Routes only admins may use, any method.
const ADMIN_PREFIXES: [&str; 4] = [
    "/api/v1/users",
    "/api/v1/api-tokens",
    "/api/v1/enrollment-tokens",
    "/api/v1/audit",
];

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether a method changes something (and so needs CSRF protection and an audit entry).
pub(crate) fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What `method path` needs. Unknown routes and methods need admin: nothing is open by
/// accident when a route is added.
pub(crate) fn required(method: &Method, path: &str, public_read: bool) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD);
    if (*method == Method::POST && (path == "/api/v1/enroll" || path == "/api/v1/login"))
        || (read && matches!(path, "/healthz" | "/readyz" | "/login"))
    {
        return Need::Public;
    }
    if ADMIN_PREFIXES.iter().any(|p| under(path, p)) {
        return Need::Role(Role::Admin);
    }
    if read {
        // Who am I: only meaningful when someone is logged in.
        if path == "/api/v1/session" || !public_read {
            return Need::Role(Role::Viewer);
        }
        return Need::Public;
    }
    if *method == Method::POST && path == "/api/v1/logout" {
        return Need::Role(Role::Viewer);
    }
    if matches!(*method, Method::POST | Method::DELETE)
        && (under(path, "/api/v1/silences")
            || (path.starts_with("/api/v1/incidents/") && path.ends_with("/ack")))
    {
        return Need::Role(Role::Operator);
    }
    Need::Role(Role::Admin)
}

/// Whether `path` is a page of the web UI: a browser without a session is sent to the login
/// form instead of getting the API's JSON 401.
pub(crate) fn is_page(path: &str) -> bool {
    path == "/"
        || path == "/incidents"
        || path == "/indicators"
        || path == "/planned"
        || ["/mo/", "/host/", "/incidents/"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// Whether the `Host` allow-list applies. It protects browsers (DNS rebinding reads pages and
/// uses cookies under a foreign name); agents enrolling (a token in the body, no ambient
/// credentials) and load balancers probing health may use any name or address.
pub(crate) fn host_checked(method: &Method, path: &str) -> bool {
    !((*method == Method::POST && path == "/api/v1/enroll")
        || (*method == Method::GET && matches!(path, "/healthz" | "/readyz")))
}

/// The decision for a request needing `need` from someone with `role` (None: anonymous).
pub(crate) fn decide(need: Need, role: Option<Role>) -> Decision {
    match (need, role) {
        (Need::Public, _) => Decision::Allow,
        (Need::Role(_), None) => Decision::Unauthenticated,
        (Need::Role(n), Some(r)) if r >= n => Decision::Allow,
        (Need::Role(_), Some(_)) => Decision::Forbidden,
    }
}

/// A browser session ends after this long without a request.
pub(crate) const SESSION_IDLE_MS: i64 = 12 * 3_600_000;
/// … and this long after login, whatever happens.
pub(crate) const SESSION_ABSOLUTE_MS: i64 = 7 * 86_400_000;

/// Whether a session created at `created_ms` and last used at `last_ms` is still valid.
pub(crate) fn session_valid(created_ms: i64, last_ms: i64, now_ms: i64) -> bool {
    now_ms - last_ms < SESSION_IDLE_MS && now_ms - created_ms < SESSION_ABSOLUTE_MS
}

/// Whether an API token is usable now.
pub(crate) fn token_valid(expires_ms: Option<i64>, revoked: bool, now_ms: i64) -> bool {
    !revoked && expires_ms.is_none_or(|e| now_ms < e)
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// A browser session (state-changing requests need its CSRF token).
    Session,
    /// `Authorization: Bearer dzt_…` (scripts, Grafana).
    Bearer,
}

/// The authenticated caller, handed to handlers as a request extension.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// A user name, or `token:NAME` for an API token.
    pub name: String,
    pub role: Role,
    pub via: Via,
}

/// Checks a user's password. The local one reads `auth.db`; a directory (LDAP/AD) can be
/// another, mapping groups to roles.
pub(crate) trait Authenticator: Send + Sync {
    /// `Ok(Some(role))` when the password is right; `Ok(None)` for a wrong user or password
    /// (never which of the two).
    fn authenticate(&self, user: &str, password: &str) -> Result<Option<Role>, db::AuthDbError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, public_read: bool, role: Option<Role>, want: Decision) {
        let got = decide(required(&method, path, public_read), role);
        assert_eq!(
            got, want,
            "{method} {path} public_read={public_read} role={role:?}"
        );
    }

    #[test]
    fn pages_are_told_from_the_api() {
        for p in [
            "/",
            "/mo/1.2.3",
            "/host/1.2.3/arm-1",
            "/incidents",
            "/incidents/7",
            "/indicators",
            "/planned",
        ] {
            assert!(is_page(p), "{p}");
        }
        for p in [
            "/api/v1/incidents",
            "/metrics",
            "/ui/events",
            "/login",
            "/mos",
        ] {
            assert!(!is_page(p), "{p}");
        }
    }

    #[test]
    fn exempt_routes_are_open() {
        for (m, p) in [
            (Method::POST, "/api/v1/enroll"),
            (Method::POST, "/api/v1/login"),
            (Method::GET, "/healthz"),
            (Method::GET, "/readyz"),
            (Method::GET, "/login"),
        ] {
            check(m, p, false, None, Decision::Allow);
        }
    }

    #[test]
    fn reading_needs_a_viewer_unless_public_read() {
        for p in [
            "/",
            "/metrics",
            "/api/v1/hosts",
            "/api/v1/silences",
            "/api/v1/x",
        ] {
            check(Method::GET, p, false, None, Decision::Unauthenticated);
            check(Method::HEAD, p, false, None, Decision::Unauthenticated);
            check(Method::GET, p, false, Some(Role::Viewer), Decision::Allow);
            check(Method::GET, p, true, None, Decision::Allow);
        }
        check(
            Method::GET,
            "/api/v1/session",
            true,
            None,
            Decision::Unauthenticated,
        );
    }

    /// Planned works change the figures of signed reports: admins only; anyone who reads
    /// may list them.
    #[test]
    fn planned_works_need_an_admin() {
        for (m, p) in [
            (Method::POST, "/api/v1/planned-works"),
            (Method::DELETE, "/api/v1/planned-works/p-1"),
        ] {
            check(
                m.clone(),
                p,
                true,
                Some(Role::Operator),
                Decision::Forbidden,
            );
            check(m, p, true, Some(Role::Admin), Decision::Allow);
        }
        check(
            Method::GET,
            "/api/v1/planned-works",
            false,
            Some(Role::Viewer),
            Decision::Allow,
        );
    }

    #[test]
    fn silences_need_an_operator() {
        for (m, p) in [
            (Method::POST, "/api/v1/silences"),
            (Method::DELETE, "/api/v1/silences/s-1"),
            (Method::POST, "/api/v1/incidents/7/ack"),
        ] {
            check(m.clone(), p, true, None, Decision::Unauthenticated);
            check(m.clone(), p, false, Some(Role::Viewer), Decision::Forbidden);
            check(m.clone(), p, false, Some(Role::Operator), Decision::Allow);
            check(m, p, false, Some(Role::Admin), Decision::Allow);
        }
    }

    #[test]
    fn admin_routes_need_an_admin_even_to_read() {
        for p in [
            "/api/v1/users",
            "/api/v1/users/ivanov",
            "/api/v1/api-tokens",
            "/api/v1/api-tokens/ab12",
            "/api/v1/enrollment-tokens",
            "/api/v1/enrollment-tokens/ab12",
            "/api/v1/audit",
        ] {
            for m in [Method::GET, Method::POST, Method::DELETE, Method::PATCH] {
                check(m.clone(), p, true, None, Decision::Unauthenticated);
                check(
                    m.clone(),
                    p,
                    true,
                    Some(Role::Operator),
                    Decision::Forbidden,
                );
                check(m, p, true, Some(Role::Admin), Decision::Allow);
            }
        }
        // A prefix is a path segment, not a string prefix.
        check(
            Method::GET,
            "/api/v1/usersx",
            false,
            Some(Role::Viewer),
            Decision::Allow,
        );
    }

    #[test]
    fn the_host_allow_list_spares_only_agents_and_probes() {
        assert!(!host_checked(&Method::POST, "/api/v1/enroll"));
        assert!(!host_checked(&Method::GET, "/healthz"));
        assert!(!host_checked(&Method::GET, "/readyz"));
        for (m, p) in [
            (Method::GET, "/"),
            (Method::GET, "/login"),
            (Method::POST, "/api/v1/login"),
            (Method::GET, "/api/v1/enroll"),
            (Method::POST, "/api/v1/silences"),
        ] {
            assert!(host_checked(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn unknown_writes_need_an_admin() {
        check(
            Method::PUT,
            "/api/v1/hosts",
            false,
            Some(Role::Operator),
            Decision::Forbidden,
        );
        check(
            Method::POST,
            "/metrics",
            false,
            Some(Role::Operator),
            Decision::Forbidden,
        );
        check(
            Method::POST,
            "/api/v1/logout",
            false,
            Some(Role::Viewer),
            Decision::Allow,
        );
        check(
            Method::POST,
            "/api/v1/logout",
            false,
            None,
            Decision::Unauthenticated,
        );
    }

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let t0 = 1_000_000_000_000;
        assert!(session_valid(t0, t0, t0 + SESSION_IDLE_MS - 1));
        assert!(!session_valid(t0, t0, t0 + SESSION_IDLE_MS));
        // Used every hour: still ends after 7 days.
        let late = t0 + SESSION_ABSOLUTE_MS - 1;
        assert!(session_valid(t0, late - 3_600_000, late));
        assert!(!session_valid(t0, late, late + 1));
    }

    #[test]
    fn tokens_expire_and_are_revoked() {
        assert!(token_valid(None, false, 5));
        assert!(token_valid(Some(6), false, 5));
        assert!(!token_valid(Some(5), false, 5));
        assert!(!token_valid(None, true, 5));
    }
}
