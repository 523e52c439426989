//! JWT authentication, verified in the host before the plugin is called.
//!
//! Keys are configured in `[auth] keys` (HS256 with a shared secret, RS256
//! or ES256 with a PEM public key); a token is checked against the keys of
//! the algorithm its header names, with `exp` required and `iss`/`aud`
//! checked when configured. The token is taken from the first configured
//! source that has one: `Authorization: Bearer <token>` (`from-header`),
//! the cookie named `cookie`, the query parameter named `query-param`.
//!
//! A valid token puts its `sub` in the scope's `user` and all its claims
//! (a JSON object) in `claims`. Whether a route needs a token is the
//! operator's decision, made in the server config rather than in the
//! plugin's manifest (the operator may not have written the plugin):
//! `required-plugins` (`"*"` = all) and `required-routes`. There a missing
//! token is answered 403; anywhere, a token that is present but bad
//! (signature, expiry, issuer, audience, algorithm) is answered 403 too.

use std::collections::HashSet;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::config::{AuthSection, ConfigError, JwtKey};

/// The verified identity placed in the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The token's `sub`, when it is a string.
    pub(crate) user: Option<String>,
    /// Every claim, as a JSON object's text.
    pub(crate) claims: String,
}

/// Why a handshake was refused (403).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("this route requires a token and none was given")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The configured keys, token sources and requirements.
pub(crate) struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    validation: Validation,
    from_header: bool,
    cookie: Option<String>,
    query_param: Option<String>,
    all_required: bool,
    required_plugins: HashSet<String>,
    required_routes: HashSet<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("required_plugins", &self.required_plugins)
            .field("required_routes", &self.required_routes)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Verifier {
    /// Parse the keys and check the section.
    pub(crate) fn new(section: &AuthSection) -> Result<Self, ConfigError> {
        let keys = section
            .keys
            .iter()
            .map(decoding_key)
            .collect::<Result<Vec<_>, _>>()?;
        let requires_any =
            !section.required_plugins.is_empty() || !section.required_routes.is_empty();
        if requires_any && keys.is_empty() {
            return Err(invalid(
                "auth.keys",
                "required-plugins or required-routes is set but no key is configured",
            ));
        }
        if !keys.is_empty()
            && !section.from_header
            && section.cookie.is_none()
            && section.query_param.is_none()
        {
            return Err(invalid(
                "auth.from-header",
                "keys are configured but no token source is (from-header, cookie, query-param)",
            ));
        }
        // The algorithm is set per key when verifying.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = section.leeway_secs;
        match &section.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &section.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            keys,
            validation,
            from_header: section.from_header,
            cookie: section.cookie.clone(),
            query_param: section.query_param.clone(),
            all_required: section.required_plugins.iter().any(|p| p == "*"),
            required_plugins: section.required_plugins.iter().cloned().collect(),
            required_routes: section.required_routes.iter().cloned().collect(),
        })
    }

    /// Whether a handshake to this plugin's route needs a valid token.
    pub(crate) fn requires(&self, plugin: &str, route: &str) -> bool {
        self.all_required
            || self.required_plugins.contains(plugin)
            || self.required_routes.contains(route)
    }

    /// Verify the handshake's token, if it has one. `Ok(None)`: no token
    /// (or no keys configured); the caller decides whether that is enough.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &str,
    ) -> Result<Option<Identity>, AuthError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(token) = self.token(headers, query) else {
            return Ok(None);
        };
        self.verify(&token).map(Some)
    }

    /// Check one token's signature and claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut last = AuthError::Invalid(format!("no key for algorithm {:?}", header.alg));
        for (algorithm, key) in &self.keys {
            if *algorithm != header.alg {
                continue;
            }
            let mut validation = self.validation.clone();
            validation.algorithms = vec![*algorithm];
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => {
                    let user = data
                        .claims
                        .get("sub")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let claims = Value::Object(data.claims).to_string();
                    return Ok(Identity { user, claims });
                }
                Err(err) => last = AuthError::Invalid(err.to_string()),
            }
        }
        Err(last)
    }

    /// The token from the first configured source that has one.
    fn token(&self, headers: &HeaderMap, query: &str) -> Option<String> {
        if self.from_header {
            let bearer = headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| token.trim().to_owned())
                });
            if bearer.is_some() {
                return bearer;
            }
        }
        if let Some(name) = &self.cookie {
            let cookie = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
                });
            if cookie.is_some() {
                return cookie;
            }
        }
        if let Some(name) = &self.query_param {
            return query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                let k = percent_decode_str(k).decode_utf8().ok()?;
                (k == name.as_str())
                    .then(|| percent_decode_str(v).decode_utf8().ok())
                    .flatten()
                    .map(|v| v.into_owned())
            });
        }
        None
    }
}

/// Parse one configured key.
fn decoding_key(key: &JwtKey) -> Result<(Algorithm, DecodingKey), ConfigError> {
    let algorithm = match key.algorithm.as_str() {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(invalid(
                "auth.keys.algorithm",
                format!("`{other}` is not one of HS256, RS256, ES256"),
            ));
        }
    };
    if algorithm == Algorithm::HS256 {
        let Some(secret) = &key.secret else {
            return Err(invalid("auth.keys.secret", "an HS256 key needs `secret`"));
        };
        if key.public_key.is_some() || key.public_key_file.is_some() {
            return Err(invalid("auth.keys", "an HS256 key takes only `secret`"));
        }
        if secret.is_empty() {
            return Err(invalid("auth.keys.secret", "must not be empty"));
        }
        return Ok((algorithm, DecodingKey::from_secret(secret.as_bytes())));
    }
    if key.secret.is_some() {
        return Err(invalid(
            "auth.keys.secret",
            format!("a {} key takes a public key, not `secret`", key.algorithm),
        ));
    }
    let pem = match (&key.public_key, &key.public_key_file) {
        (Some(pem), None) => pem.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|err| {
            invalid(
                "auth.keys.public-key-file",
                format!("cannot read {}: {err}", path.display()),
            )
        })?,
        _ => {
            return Err(invalid(
                "auth.keys.public-key",
                format!(
                    "a {} key needs exactly one of public-key, public-key-file",
                    key.algorithm
                ),
            ));
        }
    };
    let decoding = if algorithm == Algorithm::RS256 {
        DecodingKey::from_rsa_pem(pem.as_bytes())
    } else {
        DecodingKey::from_ec_pem(pem.as_bytes())
    }
    .map_err(|err| {
        invalid(
            "auth.keys.public-key",
            format!("not a {} PEM public key: {err}", key.algorithm),
        )
    })?;
    Ok((algorithm, decoding))
}
