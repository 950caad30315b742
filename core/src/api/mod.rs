//! The management REST API (API port): routing, the API key, the access log.
//!
//! Every request passes through [`handler`], which checks the key when the listener is
//! exposed beyond loopback, hands the request to the warp routes, then counts it and
//! writes one JSON access-log line. Keeping auth and logging outside the routes means a
//! route (and later a plugin's API) can neither forget them nor get them wrong.

mod answer;
mod auth;
mod manage;
mod runtime;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::json;
use tower_service::Service as _;
use warp::http::{header, Method, StatusCode};
use warp::Filter;

pub use answer::{table, Answer, Format};
pub use auth::{ensure_key, secret_file};

use crate::app::App;
use crate::serve::{Handler, Response};

/// Built-in routes: path and the methods it answers. The fallback uses this to tell
/// "wrong method" (405) from "no such API" (404).
const BUILT_INS: &[(&str, &[Method])] = &[
    ("/runtime/v1/stats", &[Method::GET]),
    ("/runtime/v1/stack", &[Method::GET]),
    ("/runtime/v1/jstack", &[Method::GET]),
    ("/runtime/v1/loglevel", &[Method::PUT]),
    ("/runtime/v1/connections", &[Method::DELETE]),
    ("/apim/v1/apis", &[Method::GET]),
    ("/slpm/v1/slps", &[Method::GET]),
];

pub fn handler(app: Arc<App>) -> Handler {
    let routes = warp::service(routes(app.clone()));
    let access = app.logs.access_log();
    Arc::new(move |req, peer| {
        let app = app.clone();
        let mut routes = routes.clone();
        let access = access.clone();
        Box::pin(async move {
            let started = Instant::now();
            let in_flight = app.stats.api_requests.started();
            let method = req.method().clone();
            let target = req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
            let agent = header_str(req.headers(), header::USER_AGENT).to_string();
            let format = Format::from_accept(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );

            let resp = if peer.exposed && !auth::authorized(&app, req.headers()) {
                Answer::error(
                    StatusCode::UNAUTHORIZED,
                    "this API listens beyond loopback: send the API key as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                )
                .header(header::WWW_AUTHENTICATE, "Bearer realm=\"jsipd\"")
                .render(format)
            } else if let Some((api, rest)) = app.plugins.route(req.uri().path()) {
                // A plugin's API: everything below /NAME/vN/ is the plugin's.
                app.plugins
                    .serve(api, req, rest, crate::plugins::Caller::operator())
                    .await
            } else {
                let Ok(resp) = routes.call(req).await;
                resp
            };

            let status = resp.status().as_u16();
            tracing::debug!("API {} {method} {target} -> {status}", peer.remote);
            drop(in_flight);
            app.stats.api_requests.record(status);
            access.write(&json!({
                "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "remote": peer.remote.to_string(),
                "tls": peer.tls,
                "method": method.as_str(),
                "target": target,
                "status": status,
                "bytes": http_body::Body::size_hint(resp.body()).exact(),
                "ms": started.elapsed().as_secs_f64() * 1000.0,
                "agent": agent,
            }));
            resp
        })
    })
}

fn header_str(headers: &header::HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let format = warp::header::optional::<String>("accept")
        .map(|a: Option<String>| Format::from_accept(a.as_deref()));
    let with_app = warp::any().map(move || app.clone());

    let stats = warp::path!("runtime" / "v1" / "stats")
        .and(warp::get())
        .and(with_app.clone())
        .and(format)
        .map(|app: Arc<App>, f| runtime::stats(&app).render(f));
    let stack = warp::path!("runtime" / "v1" / "stack")
        .and(warp::get())
        .and(format)
        .then(|f| async move { runtime::stack().await.render(f) });
    let jstack = warp::path!("runtime" / "v1" / "jstack")
        .and(warp::get())
        .and(with_app.clone())
        .and(format)
        .then(|app: Arc<App>, f| async move { runtime::jstack(&app).await.render(f) });
    let loglevel =
        warp::path!("runtime" / "v1" / "loglevel")
            .and(warp::put())
            .and(with_app.clone())
            .and(format)
            .and(warp::body::stream())
            .then(|app: Arc<App>, f, body| async move {
                runtime::set_loglevel(&app, body).await.render(f)
            });
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let disconnect = warp::path!("runtime" / "v1" / "connections")
        .and(warp::delete())
        .and(with_app.clone())
        .and(raw_query)
        .and(format)
        .then(|app: Arc<App>, q: String, f| async move {
            runtime::disconnect(&app, &q).await.render(f)
        });
    let slps = warp::path!("slpm" / "v1" / "slps")
        .and(warp::get())
        .and(with_app.clone())
        .and(format)
        .map(|app: Arc<App>, f| manage::slps(&app).render(f));
    let apis = warp::path!("apim" / "v1" / "apis")
        .and(warp::get())
        .and(with_app.clone())
        .and(format)
        .map(|app: Arc<App>, f| manage::apis(&app).render(f));
    let load_slp = warp::path!("slpm" / "v1" / String)
        .and(warp::post())
        .and(with_app.clone())
        .and(raw_query)
        .and(format)
        .then(|name: String, app: Arc<App>, q: String, f| async move {
            manage::load_slp(&app, &name, &q).await.render(f)
        });
    let unload_slp = warp::path!("slpm" / "v1" / String)
        .and(warp::delete())
        .and(with_app.clone())
        .and(format)
        .then(|name: String, app: Arc<App>, f| async move {
            manage::unload_slp(&app, &name).await.render(f)
        });
    let load_api = warp::path!("apim" / "v1" / String)
        .and(warp::post())
        .and(with_app.clone())
        .and(raw_query)
        .and(format)
        .then(|name: String, app: Arc<App>, q: String, f| async move {
            manage::load_api(&app, &name, &q).await.render(f)
        });
    let unload_api = warp::path!("apim" / "v1" / String)
        .and(warp::delete())
        .and(with_app.clone())
        .and(format)
        .then(|name: String, app: Arc<App>, f| async move {
            manage::unload_api(&app, &name).await.render(f)
        });
    let fallback = warp::method()
        .and(warp::path::full())
        .and(format)
        .map(|m: Method, p: warp::path::FullPath, f| no_route(&m, p.as_str()).render(f));

    stats
        .or(stack)
        .unify()
        .or(jstack)
        .unify()
        .or(loglevel)
        .unify()
        .or(disconnect)
        .unify()
        .or(slps)
        .unify()
        .or(apis)
        .unify()
        .or(load_slp)
        .unify()
        .or(unload_slp)
        .unify()
        .or(load_api)
        .unify()
        .or(unload_api)
        .unify()
        .or(fallback)
        .unify()
}

fn no_route(method: &Method, path: &str) -> Answer {
    match BUILT_INS.iter().find(|(p, _)| *p == path) {
        Some((_, methods)) => {
            let allowed: Vec<&str> = methods.iter().map(Method::as_str).collect();
            Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{path} does not answer {method}; it answers {}",
                    allowed.join(", ")
                ),
            )
        }
        None => Answer::error(StatusCode::NOT_FOUND, format!("no API at {path}")),
    }
}
