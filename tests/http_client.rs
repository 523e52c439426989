//! A real HTTP/1.1 client for the tests (ureq, on blocking threads), and a
//! reader of streamed bodies (Server-Sent Events) line by line.

use std::io::BufRead as _;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::{PATIENCE, TestServer};

/// One HTTP answer, body read in full.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn build(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> ureq::http::Request<Vec<u8>> {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).expect("a valid request")
}

/// `method path` on `server` with `headers` and `body`, read in full.
pub async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    request_at(server.addr, method, path, headers, body).await
}

/// `method path` on the server at `addr` (e.g. a
/// [`ServerProcess`](crate::redis_support::ServerProcess)), read in full.
pub async fn request_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let request = build(
        method,
        &format!("http://{addr}{path}"),
        headers,
        body.to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let response = agent().run(request).expect("the server answers");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .read_to_string()
            .expect("the body reads in full");
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("the client thread")
}

/// GET `path`.
pub async fn get(server: &TestServer, path: &str) -> Reply {
    request(server, "GET", path, &[], b"").await
}

/// POST `value` as JSON to `path`.
pub async fn post_json(server: &TestServer, path: &str, value: &Value) -> Reply {
    request(
        server,
        "POST",
        path,
        &[("content-type", "application/json")],
        value.to_string().as_bytes(),
    )
    .await
}

/// A response body read line by line as it streams.
#[derive(Debug)]
pub struct LineStream {
    /// The status code.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: String,
    lines: mpsc::UnboundedReceiver<String>,
}

impl LineStream {
    /// GET `path` and read its body's lines as they come.
    pub async fn open(server: &TestServer, path: &str) -> Self {
        let request = build(
            "GET",
            &format!("http://{}{path}", server.addr),
            &[],
            Vec::new(),
        );
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let response = agent().run(request).expect("the server answers");
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = head_tx.send((response.status().as_u16(), content_type));
            let reader = std::io::BufReader::new(response.into_body().into_reader());
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (status, content_type) = tokio::time::timeout(PATIENCE, head_rx)
            .await
            .expect("the response head within the test's patience")
            .expect("the client thread");
        Self {
            status,
            content_type,
            lines,
        }
    }

    /// The next line; `None` once the body has ended.
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(PATIENCE, self.lines.recv())
            .await
            .expect("a line (or the end) within the test's patience")
    }

    /// Skip lines until one equal to `line`; panics if the body ends first.
    pub async fn expect_line(&mut self, line: &str) {
        loop {
            match self.next_line().await {
                Some(got) if got == line => return,
                Some(_) => {}
                None => panic!("the body ended before the line {line:?}"),
            }
        }
    }
}
