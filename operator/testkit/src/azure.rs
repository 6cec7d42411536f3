//! A fake Entra ID token endpoint plus the Azure Monitor Logs Ingestion API, on one port (the
//! collector's `authorityHost` and `endpoint` both point at [`AzureServer::url`]).
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (form): `grant_type=client_credentials`, `client_id`,
//!   `client_secret`, `scope=https://monitor.azure.com//.default` (Entra also accepts the single
//!   slash form). Errors as Entra answers them: unknown tenant 400 `invalid_request` (AADSTS90002),
//!   other grant 400 `unsupported_grant_type`, unknown client 400 `unauthorized_client`
//!   (AADSTS700016), wrong secret 401 `invalid_client` (AADSTS7000215), other scope 400
//!   `invalid_scope` (AADSTS70011). Success: `{token_type, expires_in, ext_expires_in, access_token}`.
//! - `POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`: bearer token
//!   issued here and not expired (else 401), known DCR (else 404) and stream (else 400), body as
//!   sent at most [`Options::max_body_bytes`] (1 MB, else 413), optional `Content-Encoding: gzip`,
//!   a JSON array of objects (else 400). Success: 204 and the records are stored in
//!   [`crate::Received`], keyed by the string at [`Options::uuid_path`].
//!
//! Faults ([`crate::ProductFault`]), "down" (503 + `Retry-After`) and the `/_admin/` API of
//! [`crate::admin`] apply to ingestion requests; `POST /_admin/expire_tokens` expires every
//! issued token (the collector must fetch a new one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::probe::{self, Shape};
use crate::product::{MAX_REQUEST_BYTES, ProductCore, decode_body};
use crate::received::Item;
use crate::server::Running;

/// The scope the Logs Ingestion API requires.
pub const SCOPE: &str = "https://monitor.azure.com//.default";
/// The only API version the Logs Ingestion API serves.
pub const API_VERSION: &str = "2023-01-01";
/// Maximum body of one ingestion call, as sent (compressed or not).
pub const MAX_BODY_BYTES: usize = 1_048_576;

/// Server configuration; `Options::default()` holds a ready-made app registration and DCR.
#[derive(Clone, Debug)]
pub struct Options {
    /// `0` = a free port.
    pub port: u16,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Immutable id of the one DCR served.
    pub dcr_immutable_id: String,
    /// Stream declared in that DCR.
    pub stream_name: String,
    /// `expires_in` of issued tokens (Entra: about an hour). Shorten it to test refreshing.
    pub token_lifetime: Duration,
    pub max_body_bytes: usize,
    /// Where each record's event uuid is (object keys), default `["uuid"]`.
    pub uuid_path: Vec<String>,
    /// Keep whole records (tests) or only counters and uuids (benchmarks).
    pub keep_records: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            tenant_id: "00000000-0000-4000-8000-000000000001".into(),
            client_id: "00000000-0000-4000-8000-000000000002".into(),
            client_secret: "test-client-secret".into(),
            dcr_immutable_id: "dcr-00000000000000000000000000000001".into(),
            stream_name: "Custom-OktaSystemLogs".into(),
            token_lifetime: Duration::from_secs(3599),
            max_body_bytes: MAX_BODY_BYTES,
            uuid_path: vec!["uuid".into()],
            keep_records: true,
        }
    }
}

struct Shared {
    opts: Options,
    core: Arc<ProductCore>,
    /// Issued access tokens and when they expire.
    tokens: Mutex<HashMap<String, Instant>>,
}

/// A running fake Entra ID + Logs Ingestion endpoint; stops when dropped.
pub struct AzureServer {
    shared: Arc<Shared>,
    running: Running,
}

impl AzureServer {
    /// Starts on `127.0.0.1:<opts.port>`; panics if the port cannot be bound.
    pub async fn start(opts: Options) -> AzureServer {
        Self::try_start(opts)
            .await
            .expect("bind the Azure test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<AzureServer> {
        let port = opts.port;
        let shared = Arc::new(Shared {
            core: ProductCore::new(opts.keep_records),
            opts,
            tokens: Mutex::new(HashMap::new()),
        });
        let running = Running::spawn(port, router(shared.clone())).await?;
        Ok(AzureServer { shared, running })
    }

    /// `http://127.0.0.1:PORT`: both the authority host and the ingestion endpoint.
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// Full token URL: `{url}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.url(),
            self.shared.opts.tenant_id
        )
    }

    /// Full ingestion URL of the configured DCR and stream.
    pub fn ingestion_url(&self) -> String {
        format!(
            "{}/dataCollectionRules/{}/streams/{}?api-version={API_VERSION}",
            self.url(),
            self.shared.opts.dcr_immutable_id,
            self.shared.opts.stream_name
        )
    }

    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// Tokens issued so far (a collector caching its token asks rarely).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.core.extra("tokens_issued")
    }

    /// Expires every issued token now: the next ingestion with one of them gets 401.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    crate::product::product_server_methods!(
        "While down, ingestion answers 503 with `Retry-After: 1`."
    );
}

fn router(shared: Arc<Shared>) -> Router {
    let admin = shared.core.admin_router().merge(
        Router::new()
            .route(
                "/_admin/expire_tokens",
                post(|State(s): State<Arc<Shared>>| async move {
                    s.expire_tokens();
                    Json(s.core.stats())
                }),
            )
            .with_state(shared.clone()),
    );
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/dataCollectionRules/{dcr}/streams/{stream}", post(ingest))
        .with_state(shared)
        .merge(admin)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

impl Shared {
    fn expire_tokens(&self) {
        let past = Instant::now() - Duration::from_secs(1);
        for exp in self.tokens.lock().unwrap().values_mut() {
            *exp = past;
        }
    }
}

/// Entra's OAuth error body.
fn entra_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [description.split(':').next().unwrap_or("").trim_start_matches("AADSTS").parse::<u64>().unwrap_or(0)],
        "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": uuid::Uuid::new_v4(),
        "correlation_id": uuid::Uuid::new_v4(),
    });
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

async fn token(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Form(f): Form<TokenForm>,
) -> Response {
    let o = &s.opts;
    if tenant != o.tenant_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if f.grant_type.as_deref() != Some("client_credentials") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if f.client_id.as_deref() != Some(o.client_id.as_str()) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                f.client_id.unwrap_or_default()
            ),
        );
    }
    if f.client_secret.as_deref() != Some(o.client_secret.as_str()) {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    if !matches!(
        f.scope.as_deref(),
        Some(SCOPE) | Some("https://monitor.azure.com/.default")
    ) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
                f.scope.unwrap_or_default()
            ),
        );
    }
    let mut rng = rand::rng();
    let access_token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
        crate::webhook::b64(&rng.random::<[u8; 48]>()),
        crate::webhook::b64(&rng.random::<[u8; 32]>())
    );
    s.tokens
        .lock()
        .unwrap()
        .insert(access_token.clone(), Instant::now() + o.token_lifetime);
    s.core.bump("tokens_issued");
    let secs = o.token_lifetime.as_secs();
    Json(json!({
        "token_type": "Bearer",
        "expires_in": secs,
        "ext_expires_in": secs,
        "access_token": access_token,
    }))
    .into_response()
}

/// The Logs Ingestion API's error body.
fn ingest_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

async fn ingest(
    State(s): State<Arc<Shared>>,
    Path((dcr, stream)): Path<(String, String)>,
    Query(v): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = ingest_inner(&s, &dcr, &stream, v, &headers, &body).await;
    s.core.count(resp.status().as_u16());
    resp
}

async fn ingest_inner(
    s: &Shared,
    dcr: &str,
    stream: &str,
    v: ApiVersion,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Err(rej) = s.core.gate().await {
        return rej.answer(ingest_error(
            rej.status,
            "ServiceUnavailable",
            "Injected failure (test server).",
        ));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(bearer) = bearer else {
        return ingest_error(
            StatusCode::UNAUTHORIZED,
            "MissingAuthenticationToken",
            "The request is missing a Bearer token.",
        );
    };
    match s.tokens.lock().unwrap().get(bearer) {
        None => {
            return ingest_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            );
        }
        Some(exp) if *exp <= Instant::now() => {
            return ingest_error(
                StatusCode::UNAUTHORIZED,
                "ExpiredAuthenticationToken",
                "The access token has expired.",
            );
        }
        Some(_) => {}
    }
    if v.api_version.as_deref() != Some(API_VERSION) {
        return ingest_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersion",
            &format!("The api-version must be '{API_VERSION}'."),
        );
    }
    if dcr != s.opts.dcr_immutable_id {
        return ingest_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Data collection rule with immutable Id '{dcr}' not found."),
        );
    }
    if stream != s.opts.stream_name {
        return ingest_error(
            StatusCode::BAD_REQUEST,
            "InvalidStream",
            &format!("Stream '{stream}' is not declared in the data collection rule."),
        );
    }
    if body.len() > s.opts.max_body_bytes {
        return ingest_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ContentLengthLimitExceeded",
            &format!(
                "Maximum request body size is {} bytes; got {}.",
                s.opts.max_body_bytes,
                body.len()
            ),
        );
    }
    let json = match decode_body(headers, body, 64 * s.opts.max_body_bytes) {
        Ok(j) => j,
        Err(e) => return ingest_error(StatusCode::BAD_REQUEST, "InvalidContentEncoding", &e),
    };
    let path: Vec<&str> = s.opts.uuid_path.iter().map(String::as_str).collect();
    let shapes = match probe::array(&json, &path) {
        Ok(shapes) => shapes,
        Err(e) => {
            return ingest_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestBody",
                &format!("The body must be a JSON array of records: {e}"),
            );
        }
    };
    let mut uuids = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.into_iter().enumerate() {
        match shape {
            Shape::Object { found } => uuids.push(found),
            _ => {
                return ingest_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestBody",
                    &format!("Record {i} is not a JSON object."),
                );
            }
        }
    }
    let records: Vec<Option<Value>> = if s.core.received.keeps_records() {
        serde_json::from_slice::<Vec<Value>>(&json)
            .expect("validated above")
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; uuids.len()]
    };
    s.core.received.accept(
        uuids
            .into_iter()
            .zip(records)
            .map(|(uuid, record)| Item { uuid, record })
            .collect(),
    );
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests;
