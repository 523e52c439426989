//! [`HostEntry`]: one entry of `hosts`, in every form channels_redis's
//! `decode_hosts`/`create_pool` accept, and what redis-rs needs to reach it.
//!
//! | channels_redis (`CHANNEL_LAYERS` → `hosts`)             | TOML (`[redis] hosts`)                         |
//! |----------------------------------------------------------|------------------------------------------------|
//! | `"redis://h:6379/0"`                                     | `"redis://h:6379/0"`                           |
//! | `("h", 6379)`                                            | `["h", 6379]`                                  |
//! | `{"address": "redis://h", "db": 1, "password": "pw"}`    | `{ address = "redis://h", db = 1, password = "pw" }` |
//! | `{"host": "h", "port": 6380, "ssl": True}`               | `{ host = "h", port = 6380, ssl = true }`      |
//! | `{"sentinels": [("s", 26379)], "master_name": "m", "sentinel_kwargs": {"password": "x"}}` | `{ sentinels = [["s", 26379]], master-name = "m", sentinel-kwargs = { password = "x" } }` |
//!
//! A table accepts the connection options that map to redis-rs (`db`,
//! `username`, `password`, `ssl`); any other key is an error naming it.
//! Passwords never reach logs: [`HostEntry::label`] and `Debug` redact them.

use std::fmt;

use redis::sentinel::SentinelNodeConnectionInfo;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsMode};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::config::redact_url;

/// channels_redis's default port for a `host` with no `port`.
const DEFAULT_PORT: u16 = 6379;

/// One Redis host (one shard), as channels_redis's `hosts` lists them.
#[derive(Clone, PartialEq, Eq)]
pub enum HostEntry {
    /// A URL (`redis://`, `rediss://`, `unix://`), alone or as a table's
    /// `address`, with options that replace the URL's own.
    Address {
        /// The URL.
        url: String,
        /// `db`, `username`, `password` over the URL's.
        options: ConnectionOptions,
    },
    /// A `[host, port]` pair, or a table with `host` (and `port`).
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
        /// `db`, `username`, `password`, `ssl`.
        options: ConnectionOptions,
    },
    /// A master found through Redis Sentinel.
    Sentinel(SentinelEntry),
}

/// The connection options of a table entry (redis-py's connection kwargs
/// that redis-rs has).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Database number (`SELECT`).
    pub db: Option<i64>,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (`AUTH`).
    pub password: Option<String>,
    /// TLS (as a `rediss://` URL).
    pub ssl: Option<bool>,
}

/// A Sentinel entry: channels_redis's `sentinels`, `master_name`,
/// `sentinel_kwargs`, plus connection options for the master.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelEntry {
    /// The sentinels' addresses, asked in order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// How to connect to the sentinels themselves.
    pub sentinel_kwargs: ConnectionOptions,
    /// How to connect to the master they name.
    pub options: ConnectionOptions,
}

impl From<String> for HostEntry {
    fn from(url: String) -> Self {
        Self::Address {
            url,
            options: ConnectionOptions::default(),
        }
    }
}

impl From<&str> for HostEntry {
    fn from(url: &str) -> Self {
        Self::from(url.to_owned())
    }
}

impl HostEntry {
    /// How the entry appears in logs, errors and health: the URL or
    /// address, its password redacted; for Sentinel,
    /// `sentinel://<master-name>@<sentinel>,...`.
    pub fn label(&self) -> String {
        match self {
            Self::Address { url, options } => {
                format!("{}{}", redact_url(url), options.describe())
            }
            Self::Tcp {
                host,
                port,
                options,
            } => {
                let scheme = if options.ssl == Some(true) {
                    "rediss"
                } else {
                    "redis"
                };
                format!("{scheme}://{host}:{port}{}", options.describe())
            }
            Self::Sentinel(entry) => {
                let sentinels: Vec<String> = entry
                    .sentinels
                    .iter()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .collect();
                format!(
                    "sentinel://{}@{}{}",
                    entry.master_name,
                    sentinels.join(","),
                    entry.options.describe()
                )
            }
        }
    }

    /// What redis-rs connects to for a direct entry; `None` for Sentinel.
    ///
    /// # Errors
    /// A URL redis-rs cannot parse, or `ssl` on a URL (its scheme says it).
    pub fn connection_info(&self) -> Result<Option<ConnectionInfo>, redis::RedisError> {
        match self {
            Self::Address { url, options } => {
                if options.ssl.is_some() {
                    return Err(invalid_option(
                        "`ssl` goes with `host`/`port`; with an `address`, use a rediss:// URL",
                    ));
                }
                let info = url.as_str().into_connection_info()?;
                let settings = options.apply(info.redis_settings().clone());
                Ok(Some(info.set_redis_settings(settings)))
            }
            Self::Tcp {
                host,
                port,
                options,
            } => {
                let addr = if options.ssl == Some(true) {
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host.clone(), *port)
                };
                let info = addr.into_connection_info()?;
                let settings = options.apply(RedisConnectionInfo::default());
                Ok(Some(info.set_redis_settings(settings)))
            }
            Self::Sentinel(_) => Ok(None),
        }
    }

    /// A URL for the same server when the entry is one plain URL or
    /// `[host, port]` pair (the key-value store takes a URL); `None` for
    /// tables with options and for Sentinel.
    pub fn plain_url(&self) -> Option<String> {
        match self {
            Self::Address { url, options } if *options == ConnectionOptions::default() => {
                Some(url.clone())
            }
            Self::Tcp {
                host,
                port,
                options,
            } if *options == ConnectionOptions::default() => Some(format!("redis://{host}:{port}")),
            _ => None,
        }
    }

    /// Checks what can be checked before connecting.
    ///
    /// # Errors
    /// Why redis-rs cannot use the entry.
    pub fn validate(&self) -> Result<(), redis::RedisError> {
        match self {
            Self::Sentinel(entry) => entry.sentinel_infos().map(|_| ()),
            _ => self.connection_info().map(|_| ()),
        }
    }
}

impl SentinelEntry {
    /// The sentinels' connection infos, with `sentinel-kwargs` applied.
    ///
    /// # Errors
    /// No sentinels, or an empty master name.
    pub(crate) fn sentinel_infos(&self) -> Result<Vec<ConnectionInfo>, redis::RedisError> {
        if self.sentinels.is_empty() {
            return Err(invalid_option("`sentinels` lists no sentinel"));
        }
        if self.master_name.is_empty() {
            return Err(invalid_option("`master-name` is empty"));
        }
        if self.sentinel_kwargs.db.is_some() {
            return Err(invalid_option("`sentinel-kwargs` takes no `db`"));
        }
        self.sentinels
            .iter()
            .map(|(host, port)| {
                let info =
                    tcp_addr(host, *port, self.sentinel_kwargs.ssl).into_connection_info()?;
                let settings = self.sentinel_kwargs.apply(RedisConnectionInfo::default());
                Ok(info.set_redis_settings(settings))
            })
            .collect()
    }

    /// How to connect to the master the sentinels name.
    pub(crate) fn node_info(&self) -> SentinelNodeConnectionInfo {
        let info = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(self.options.apply(RedisConnectionInfo::default()));
        if self.options.ssl == Some(true) {
            info.set_tls_mode(TlsMode::Secure)
        } else {
            info
        }
    }
}

fn tcp_addr(host: &str, port: u16, ssl: Option<bool>) -> ConnectionAddr {
    if ssl == Some(true) {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}

fn invalid_option(message: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, message))
}

impl ConnectionOptions {
    fn apply(&self, mut settings: RedisConnectionInfo) -> RedisConnectionInfo {
        if let Some(db) = self.db {
            settings = settings.set_db(db);
        }
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        settings
    }

    /// ` (db 1, user u, password ***)` for labels; empty without options.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(db) = self.db {
            parts.push(format!("db {db}"));
        }
        if let Some(username) = &self.username {
            parts.push(format!("user {username}"));
        }
        if self.password.is_some() {
            parts.push("password ***".to_owned());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

impl fmt::Debug for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionOptions")
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ssl", &self.ssl)
            .finish()
    }
}

impl fmt::Debug for SentinelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelEntry")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("sentinel_kwargs", &self.sentinel_kwargs)
            .field("options", &self.options)
            .finish()
    }
}

/// Every key a table entry may have; which combinations are valid is
/// checked after (serde's `flatten` cannot deny unknown keys).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TableEntry {
    address: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    sentinels: Option<Vec<(String, u16)>>,
    master_name: Option<String>,
    sentinel_kwargs: Option<SentinelKwargs>,
    db: Option<i64>,
    username: Option<String>,
    password: Option<String>,
    ssl: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SentinelKwargs {
    username: Option<String>,
    password: Option<String>,
    ssl: Option<bool>,
}

impl TableEntry {
    fn into_entry(self) -> Result<HostEntry, String> {
        let options = ConnectionOptions {
            db: self.db,
            username: self.username,
            password: self.password,
            ssl: self.ssl,
        };
        let where_ = match (&self.address, &self.host) {
            (Some(address), _) => format!("the entry with address {}", redact_url(address)),
            (None, Some(host)) => format!("the entry with host {host}"),
            (None, None) => match &self.master_name {
                Some(name) => format!("the Sentinel entry for {name}"),
                None => "a table entry".to_owned(),
            },
        };
        let fail = |message: &str| Err(format!("{where_}: {message}"));
        let sentinel = self.sentinels.is_some()
            || self.master_name.is_some()
            || self.sentinel_kwargs.is_some();
        match (self.address, self.host, sentinel) {
            (Some(_), Some(_), _) => fail("give `address` or `host`, not both"),
            (Some(_), None, true) | (None, Some(_), true) => {
                fail("`sentinels`/`master-name` do not go with `address` or `host`")
            }
            (Some(url), None, false) => {
                if self.port.is_some() {
                    return fail("`port` goes with `host`; put it in the `address` URL");
                }
                if options.ssl.is_some() {
                    return fail("`ssl` goes with `host`; use a rediss:// `address`");
                }
                Ok(HostEntry::Address { url, options })
            }
            (None, Some(host), false) => Ok(HostEntry::Tcp {
                host,
                port: self.port.unwrap_or(DEFAULT_PORT),
                options,
            }),
            (None, None, true) => {
                if self.port.is_some() {
                    return fail("`port` does not go with `sentinels`");
                }
                let Some(sentinels) = self.sentinels else {
                    return fail("a Sentinel entry needs `sentinels`");
                };
                let Some(master_name) = self.master_name else {
                    return fail("a Sentinel entry needs `master-name`");
                };
                if sentinels.is_empty() {
                    return fail("`sentinels` lists no sentinel");
                }
                let kwargs = self.sentinel_kwargs.unwrap_or(SentinelKwargs {
                    username: None,
                    password: None,
                    ssl: None,
                });
                Ok(HostEntry::Sentinel(SentinelEntry {
                    sentinels,
                    master_name,
                    sentinel_kwargs: ConnectionOptions {
                        db: None,
                        username: kwargs.username,
                        password: kwargs.password,
                        ssl: kwargs.ssl,
                    },
                    options,
                }))
            }
            (None, None, false) => {
                fail("a table needs `address`, `host`, or `sentinels` with `master-name`")
            }
        }
    }
}

/// A URL string, a `[host, port]` pair, or a table (see the module docs);
/// errors say which form was meant and what is wrong with it.
impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = HostEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a Redis URL string, a [host, port] pair, or a table with `address`, `host`, \
             or `sentinels` and `master-name`",
        )
    }

    fn visit_str<E: de::Error>(self, url: &str) -> Result<HostEntry, E> {
        Ok(HostEntry::from(url))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HostEntry, A::Error> {
        let host: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("a [host, port] pair lacks its host"))?;
        let port: u16 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom(format!("the pair [{host:?}, ...] lacks its port")))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "the pair [{host:?}, {port}, ...] has more than a host and a port"
            )));
        }
        Ok(HostEntry::Tcp {
            host,
            port,
            options: ConnectionOptions::default(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HostEntry, A::Error> {
        let table = TableEntry::deserialize(de::value::MapAccessDeserializer::new(map))?;
        table.into_entry().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Hosts {
        hosts: Vec<HostEntry>,
    }

    fn parse(json: &str) -> Result<Vec<HostEntry>, String> {
        serde_json::from_str::<Hosts>(json)
            .map(|h| h.hosts)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_channels_redis_accepts() {
        let hosts = parse(
            r#"{"hosts": [
                "redis://:pw@a:6379/0",
                ["b", 6380],
                {"address": "redis://c", "db": 2, "password": "secret"},
                {"host": "d", "ssl": true, "username": "u"},
                {"sentinels": [["s1", 26379], ["s2", 26380]], "master-name": "mymaster",
                 "sentinel-kwargs": {"password": "sp"}, "db": 1}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(hosts.len(), 5);
        assert_eq!(hosts[0], HostEntry::from("redis://:pw@a:6379/0"));
        assert_eq!(
            hosts[1],
            HostEntry::Tcp {
                host: "b".into(),
                port: 6380,
                options: ConnectionOptions::default()
            }
        );
        let info = hosts[2].connection_info().expect("ok").expect("direct");
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(info.redis_settings().password(), Some("secret"));
        let info = hosts[3].connection_info().expect("ok").expect("direct");
        assert!(matches!(
            info.addr(),
            ConnectionAddr::TcpTls { port: 6379, .. }
        ));
        assert_eq!(info.redis_settings().username(), Some("u"));
        let HostEntry::Sentinel(sentinel) = &hosts[4] else {
            panic!("{:?}", hosts[4]);
        };
        assert_eq!(sentinel.master_name, "mymaster");
        assert_eq!(sentinel.sentinels[1], ("s2".to_owned(), 26380));
        let infos = sentinel.sentinel_infos().expect("valid");
        assert_eq!(infos[0].redis_settings().password(), Some("sp"));
        assert!(hosts[4].connection_info().expect("ok").is_none());
        for entry in &hosts {
            entry.validate().expect("valid");
        }
    }

    #[test]
    fn passwords_never_show() {
        let hosts = parse(
            r#"{"hosts": [
                "redis://u:pw1@a/0",
                {"address": "redis://c", "password": "pw2"},
                {"sentinels": [["s", 1]], "master-name": "m", "password": "pw3",
                 "sentinel-kwargs": {"password": "pw4"}}
            ]}"#,
        )
        .expect("valid");
        let shown = format!(
            "{hosts:?} {:?} {}",
            hosts.iter().map(HostEntry::label).collect::<Vec<_>>(),
            hosts[2].label()
        );
        for secret in ["pw1", "pw2", "pw3", "pw4"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("sentinel://m@s:1"), "{shown}");
        let HostEntry::Sentinel(entry) = &hosts[2] else {
            panic!()
        };
        let debug = format!("{entry:?}");
        assert!(!debug.contains("pw3") && !debug.contains("pw4"), "{debug}");
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_and_key() {
        let cases = [
            (
                r#"{"address": "redis://a", "socket_timeout": 5}"#,
                "socket_timeout",
            ),
            (r#"{"address": "redis://a", "host": "b"}"#, "not both"),
            (
                r#"{"address": "redis://a", "port": 1}"#,
                "`port` goes with `host`",
            ),
            (r#"{"address": "redis://a", "ssl": true}"#, "rediss://"),
            (r#"{"db": 1}"#, "needs `address`, `host`"),
            (r#"{"master-name": "m"}"#, "needs `sentinels`"),
            (r#"{"sentinels": [["s", 1]]}"#, "needs `master-name`"),
            (
                r#"{"sentinels": [], "master-name": "m"}"#,
                "lists no sentinel",
            ),
            (
                r#"{"sentinels": [["s", 1]], "master-name": "m", "sentinel-kwargs": {"db": 1}}"#,
                "unknown field `db`",
            ),
            (
                r#"{"host": "h", "sentinels": [["s", 1]], "master-name": "m"}"#,
                "the entry with host h",
            ),
            (r#"["h"]"#, "lacks its port"),
            (r#"["h", 1, 2]"#, "more than a host and a port"),
            (r#"["h", 70000]"#, "70000"),
            ("5", "a Redis URL string"),
        ];
        for (entry, expected) in cases {
            let err = parse(&format!(r#"{{"hosts": [{entry}]}}"#)).expect_err(entry);
            assert!(err.contains(expected), "{entry}: {err}");
        }
    }

    #[test]
    fn urls_redis_rs_cannot_use_fail_validation() {
        assert!(HostEntry::from("http://a").validate().is_err());
        assert!(HostEntry::from("redis://a:6379/0").validate().is_ok());
    }

    #[test]
    fn plain_urls_for_the_keyvalue_store() {
        assert_eq!(
            HostEntry::from("redis://a/1").plain_url().as_deref(),
            Some("redis://a/1")
        );
        let pair = HostEntry::Tcp {
            host: "b".into(),
            port: 7,
            options: ConnectionOptions::default(),
        };
        assert_eq!(pair.plain_url().as_deref(), Some("redis://b:7"));
    }
}
