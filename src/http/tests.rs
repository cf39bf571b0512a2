//! The router in-process, through `tower::ServiceExt::oneshot`: routing, access rules and error
//! shapes, with a real (empty) RTSP server behind it and no camera.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Part, Shared, router};
use crate::config::{Config, Secret};
use crate::control::Control;
use crate::metrics::Metrics;
use crate::output::rtsp::RtspServer;
use crate::stream::clock::SharedTime;

fn shared(token: Option<&str>) -> Shared {
    let mut config = Config::default();
    if let Some(t) = token {
        config.http.token = Secret(t.into());
    }
    shared_with(config)
}

fn shared_with(mut config: Config) -> Shared {
    gst::init().unwrap();
    config.rtsp.port = 0;
    config.rtsp.address = "127.0.0.1".parse().unwrap();
    let access = Arc::new(crate::access::Access::from_config(&config).unwrap());
    let config = Arc::new(config);
    let time = SharedTime::now();
    let rtsp =
        Arc::new(RtspServer::start(&config, access.clone(), time.clone(), Metrics::new()).unwrap());
    let (exits, _) = tokio::sync::mpsc::unbounded_channel();
    let control = Arc::new(Control::new(
        config,
        rtsp.clone(),
        time,
        CancellationToken::new(),
        exits,
    ));
    let access = Arc::new(crate::access::Access::from_config(&control.config()).unwrap());
    Shared {
        control,
        heartbeat: rtsp.heartbeat(),
        prometheus: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        started: Instant::now(),
        access,
        sessions: Arc::default(),
        webrtc: None,
        rtsp_running: Arc::new(AtomicBool::new(true)),
        analysis: None,
        onvif: None,
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_access_rules_and_errors() {
    let open = router(shared(None), Part::All);
    assert_eq!(
        call(&open, "GET", "/healthz", None, "").await.0,
        StatusCode::OK
    );
    // No streams configured here: nothing required, so ready once RTSP answers.
    assert_eq!(
        call(&open, "GET", "/readyz", None, "").await.0,
        StatusCode::OK
    );
    let (code, body) = call(&open, "GET", "/api/v1/streams", None, "").await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, r#"{"streams":[]}"#));
    let (code, body) = call(&open, "PATCH", "/api/v1/streams/video", None, "{}").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("http.token"), "{body}");
    assert_eq!(
        call(&open, "GET", "/nope", None, "").await.0,
        StatusCode::NOT_FOUND
    );
    let long = format!("/snapshot.jpg?width={}", "9".repeat(300));
    assert_eq!(
        call(&open, "GET", &long, None, "").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&open, "GET", "/snapshot.jpg?stream=nope", None, "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let guarded = router(shared(Some("t0k")), Part::All);
    assert_eq!(
        call(&guarded, "GET", "/api/v1/streams", None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&guarded, "GET", "/api/v1/streams", Some("t0k"), "")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &guarded,
            "PATCH",
            "/api/v1/streams/video",
            Some("wrong"),
            "{}"
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (code, body) = call(
        &guarded,
        "PATCH",
        "/api/v1/streams/video",
        Some("t0k"),
        "{}",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = call(
        &guarded,
        "PATCH",
        "/api/v1/streams/video",
        Some("t0k"),
        "not json",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    // Probes stay open with a token unless protect_probes is set.
    assert_eq!(
        call(&guarded, "GET", "/healthz", None, "").await.0,
        StatusCode::OK
    );
}

/// Every declared route answers by its rule: with the doors closed (an account, probes and
/// metrics protected), anything but a public route refuses the anonymous visitor with 401 and
/// a challenge, before its handler runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_has_a_rule_and_keeps_it() {
    let mut config = Config::default();
    config.auth.username = "alice".into();
    config.auth.password = Secret("pw".into());
    config.http.protect_probes = true;
    config.http.protect_metrics = true;
    let shared = shared_with(config);
    let declared = super::doors(shared.clone(), Part::All).declared().to_vec();
    assert!(declared.len() >= 20, "{declared:#?}");
    let app = router(shared, Part::All);
    for d in &declared {
        let path = d
            .path
            .replace("{name}", "video")
            .replace("{stream}", "video")
            .replace("{file}", "video.mp4")
            .replace("{push}", "p")
            .replace("{id}", "x");
        for method in d.methods.split(", ") {
            let (code, body) = call(&app, method, &path, None, "").await;
            if d.rule.action == crate::access::Action::Public {
                assert_ne!(code, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            } else {
                assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            }
        }
    }
}

/// Every output reached through the sidecar (output::registry::OUTPUTS) has its routes
/// declared with its door and action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_served_over_http_has_its_routes() {
    use crate::output::registry::{OUTPUTS, Reach};
    let declared = super::doors(shared(None), Part::All).declared().to_vec();
    for o in OUTPUTS {
        let Reach::Door(door, action) = o.reach else {
            continue;
        };
        let served = match door {
            crate::access::Door::Webrtc => declared
                .iter()
                .any(|d| d.rule.door == door && d.rule.action == action),
            crate::access::Door::Http => {
                let path = if o.name == "record" {
                    "recordings"
                } else {
                    o.name
                };
                declared.iter().any(|d| {
                    d.path.contains(path) && d.rule.door == door && d.rule.action == action
                })
            }
            // RTSP has its own server; ONVIF's routes exist only when enabled and decide per
            // operation (tests/access_matrix.rs).
            _ => true,
        };
        assert!(
            served,
            "{} has no route with its rule: {declared:#?}",
            o.name
        );
    }
}
