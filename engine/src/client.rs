//! A small client of the engine API, for the CLI's client verbs.

use serde_json::Value;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad arguments or an unreadable local file.
    #[error("{0}")]
    Usage(String),
    /// The engine could not be reached.
    #[error(
        "cannot reach the engine at {url}: {message} (is `switchyard dev` or `switchyard engine` running? set --url or SWITCHYARD_URL)"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        message: String,
    },
    /// The engine answered with an error.
    #[error("{status}: {code}: {message}{details}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The message.
        message: String,
        /// Problems, one per line, when the engine listed them.
        details: String,
    },
}

/// The engine API at one base URL.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<zeroize::Zeroizing<String>>,
}

impl Client {
    /// A client of the engine at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.map(zeroize::Zeroizing::new);
        self
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `PUT path` with a text body.
    pub async fn put_text(&self, path: &str, body: String) -> Result<Value, ClientError> {
        self.send(
            self.http
                .put(self.url(path))
                .header("content-type", "application/yaml")
                .body(body),
        )
        .await
    }

    /// `POST path` with a JSON body and an optional idempotency key.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json");
        if !body.is_null() {
            req = req.body(body.to_string());
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        self.send(req).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.delete(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.as_str());
        }
        let response = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status < 400 {
            return Ok(body);
        }
        let err = &body["error"];
        let details = err["details"]["problems"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        format!(
                            "\n  {}:{}: {}: {}",
                            p["line"],
                            p["column"],
                            p["path"].as_str().unwrap_or(""),
                            p["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        Err(ClientError::Api {
            status,
            code: err["code"].as_str().unwrap_or("unknown").to_owned(),
            message: err["message"].as_str().unwrap_or("").to_owned(),
            details,
        })
    }
}
