//! The forms that change something: each becomes the typed request the
//! admin API's handler makes, for the same domain method, so a refusal is
//! worded as the API words it.

use std::path::PathBuf;

use http::{Response, StatusCode};
use minijinja::context;

use super::Console;
use super::respond::{plain, redirect};
use super::session::Form;
use crate::apps::{OpError, PutRequest, ScaleRequest, TrafficRequest};
use crate::config::AppConfig;
use crate::http::Body;

impl Console {
    /// A posted form at `segments`, its CSRF token checked.
    pub(super) async fn post(&self, segments: &[&str], form: &Form, csrf: &str) -> Response<Body> {
        match segments {
            ["logout"] => self.sign_out(csrf),
            ["deploy"] => self.deploy(form, csrf).await,
            ["apps", name, "traffic"] => {
                let result = match number(form, "latest_percent") {
                    Ok(Some(latest_percent)) => self
                        .apps
                        .set_traffic(name, TrafficRequest { latest_percent }),
                    Ok(None) => Err(OpError::invalid(None, "give the latest revision's share")),
                    Err(e) => Err(e),
                };
                self.after(name, csrf, result.map(drop)).await
            }
            ["apps", name, "scale"] => {
                let result = match (number(form, "min_scale"), number(form, "max_scale")) {
                    (Ok(min_scale), Ok(max_scale)) => {
                        let req = ScaleRequest {
                            min_scale,
                            max_scale,
                        };
                        self.apps.scale(name, req).await.map(drop)
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                self.after(name, csrf, result).await
            }
            ["apps", name, "delete"] => match self.apps.delete(name).await {
                Ok(()) => redirect("/ui/"),
                Err(e) => self.app_page(name, csrf, Some(e.to_string())).await,
            },
            _ => plain(StatusCode::NOT_FOUND, "no such action\n"),
        }
    }

    /// Back to the app's page: through a redirect when `result` is a
    /// success, else with its error above the page.
    async fn after(&self, name: &str, csrf: &str, result: Result<(), OpError>) -> Response<Body> {
        match result {
            Ok(()) => redirect(&format!("/ui/apps/{name}")),
            Err(e) => self.app_page(name, csrf, Some(e.to_string())).await,
        }
    }

    /// The deploy form: the settings it gives, deployed as the API's
    /// `PUT /v1/apps/{name}[?traffic=N]` deploys them.
    async fn deploy(&self, form: &Form, csrf: &str) -> Response<Body> {
        let again = |error: String| {
            self.page(
                StatusCode::BAD_REQUEST,
                "deploy.html",
                context! { csrf, form, error },
            )
        };
        let name = form.get("name").map(|s| s.trim()).unwrap_or("");
        let req = match put_request(form) {
            Ok(req) => req,
            Err(e) => return again(e),
        };
        if name.is_empty() || name.contains(['/', '?', '#', '%']) {
            return again("give the app a name (letters, digits and -)".into());
        }
        match self.apps.put(name, req).await {
            Ok(_) => redirect(&format!("/ui/apps/{name}")),
            Err(e) => again(e.to_string()),
        }
    }
}

/// The deploy form's fields as a typed deploy: `wasm` or `image`, routes
/// split on commas and spaces, `KEY=VALUE` lines of environment, and the
/// new revision's share of traffic (empty: 100).
fn put_request(form: &Form) -> Result<PutRequest, String> {
    let field = |k: &str| form.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let mut config = AppConfig {
        wasm: field("wasm").map(PathBuf::from),
        image: field("image").map(str::to_string),
        ..AppConfig::default()
    };
    config.routes = field("routes")
        .unwrap_or("")
        .split([',', ' ', '\n', '\r'])
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    for line in field("env").unwrap_or("").lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("env line `{line}`: write KEY=VALUE"));
        };
        config.env.insert(k.trim().into(), v.into());
    }
    let traffic_percent = number(form, "traffic")
        .map_err(|e| e.to_string())?
        .unwrap_or(100);
    Ok(PutRequest {
        config,
        traffic_percent,
    })
}

/// The whole number in field `key`; none when it is empty.
fn number(form: &Form, key: &str) -> Result<Option<u32>, OpError> {
    match form.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            OpError::invalid(Some(key), format!("`{key}`: `{v}` is not a whole number"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn the_deploy_form_becomes_a_typed_deploy() {
        let req = put_request(&form(&[
            ("name", "x"),
            ("wasm", " /srv/x.wasm "),
            ("image", ""),
            ("routes", "/a, /b\n/c"),
            ("env", "A=1\r\n\r\nB = two=2\n"),
            ("traffic", "30"),
        ]))
        .unwrap();
        assert_eq!(
            req.config.wasm.as_deref(),
            Some(std::path::Path::new("/srv/x.wasm"))
        );
        assert_eq!(req.config.image, None);
        assert_eq!(req.config.routes, ["/a", "/b", "/c"]);
        assert_eq!(req.config.env["A"], "1");
        assert_eq!(req.config.env["B"], " two=2");
        assert_eq!(req.traffic_percent, 30);
        let plain = put_request(&form(&[("image", "r/x:1")])).unwrap();
        assert_eq!(plain.traffic_percent, 100);
        assert!(plain.config.routes.is_empty() && plain.config.env.is_empty());
        let e = put_request(&form(&[("env", "NOVALUE")])).unwrap_err();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = put_request(&form(&[("traffic", "lots")])).unwrap_err();
        assert!(e.contains("not a whole number"), "{e}");
    }
}
