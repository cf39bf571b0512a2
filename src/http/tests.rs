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
    gst::init().unwrap();
    let mut config = Config::default();
    config.rtsp.port = 0;
    config.rtsp.address = "127.0.0.1".parse().unwrap();
    let config = Arc::new(config);
    let time = SharedTime::now();
    let rtsp = Arc::new(RtspServer::start(&config, time.clone(), Metrics::new()).unwrap());
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
        token: token.map(|t| Secret(t.into())),
        webrtc: None,
        rtsp_running: Arc::new(AtomicBool::new(true)),
        analysis: None,
        onvif: None,
        access,
        sessions: Arc::default(),
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
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
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
