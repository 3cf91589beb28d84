//! Configuration: from a `dynamodb://` URL or built with `with_*` setters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::{Backoff, Clock, Error, Result, StreamName};

use crate::observe::MonotonicClock;
use crate::schema::KeyLayout;

/// How a table created by [`checkpoint_core::LeaseManager::init`] is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Billing {
    /// On-demand (`PAY_PER_REQUEST`).
    OnDemand,
    /// Provisioned capacity.
    Provisioned {
        /// Read capacity units.
        read: i64,
        /// Write capacity units.
        write: i64,
    },
}

/// Static AWS credentials. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where and how to reach the lease table.
///
/// ```
/// use checkpoint_dynamo::DynamoConfig;
/// let config = DynamoConfig::from_url("dynamodb://leases?region=eu-west-1")?;
/// assert_eq!(config.table(), "leases");
/// # Ok::<(), checkpoint_core::Error>(())
/// ```
#[derive(Clone)]
pub struct DynamoConfig {
    pub(crate) table: String,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) credentials: Option<StaticCredentials>,
    pub(crate) billing: Billing,
    pub(crate) layout: KeyLayout,
    pub(crate) kcl_at_timestamp: Option<u64>,
    pub(crate) backoff: Backoff,
    pub(crate) renew_concurrency: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) table_active_timeout: Duration,
    /// Items a `Scan` page of a listing evaluates (its `Limit`); `None`: DynamoDB's 1 MB pages.
    pub(crate) list_page_size: Option<i32>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether `clock` is the process's default clock (observations may then be shared).
    pub(crate) default_clock: bool,
}

impl fmt::Debug for DynamoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoConfig")
            .field("table", &self.table)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("billing", &self.billing)
            .field("layout", &self.layout)
            .field("kcl_at_timestamp", &self.kcl_at_timestamp)
            .field("backoff", &self.backoff)
            .field("renew_concurrency", &self.renew_concurrency)
            .field("request_timeout", &self.request_timeout)
            .field("table_active_timeout", &self.table_active_timeout)
            .field("list_page_size", &self.list_page_size)
            .field("clock", &self.clock)
            .finish()
    }
}

fn validate_table(table: &str) -> Result<()> {
    if !(3..=255).contains(&table.len()) {
        return Err(Error::invalid(
            "table",
            "a DynamoDB table name is 3 to 255 characters long",
        ));
    }
    if let Some(bad) = table
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::invalid(
            "table",
            format!("contains {bad:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"),
        ));
    }
    Ok(())
}

impl DynamoConfig {
    /// The table `table`, every other setting at its default. Fails when the name is not a
    /// valid DynamoDB table name (3 to 255 of `[A-Za-z0-9_.-]`).
    pub fn new(table: impl Into<String>) -> Result<Self> {
        let table = table.into();
        validate_table(&table)?;
        Ok(Self {
            table,
            region: None,
            endpoint: None,
            credentials: None,
            billing: Billing::OnDemand,
            layout: KeyLayout::Shared,
            kcl_at_timestamp: None,
            backoff: Backoff::default(),
            renew_concurrency: 16,
            request_timeout: Duration::from_secs(5),
            table_active_timeout: Duration::from_secs(60),
            list_page_size: None,
            clock: MonotonicClock::process(),
            default_clock: true,
        })
    }

    /// Parses `dynamodb://<table>?<options>`. Options (all optional): `region`, `endpoint`
    /// (for DynamoDB Local or moto, e.g. `http://127.0.0.1:8000`), `access_key_id` +
    /// `secret_access_key` (+ `session_token`) for static credentials (otherwise the AWS default
    /// chain: environment, profile, web identity, container, instance metadata),
    /// `billing=on-demand` or `billing=provisioned` with `read_capacity` / `write_capacity`,
    /// `request_timeout_ms`, `renew_concurrency`, `list_page_size` (see
    /// [`DynamoConfig::with_list_page_size`]), `kcl_stream=<stream>` for the KCL
    /// single-stream layout, `kcl_multi_stream=<account>:<stream>:<epoch>` for one stream of a
    /// KCL multi-stream table, `kcl_at_timestamp_ms` (see
    /// [`DynamoConfig::with_kcl_at_timestamp`]). An unknown option is an error (naming the option, never
    /// its value, which may be a secret).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid("url", e.to_string()))?;
        if parsed.scheme() != "dynamodb" {
            return Err(Error::invalid("url", "the scheme must be dynamodb://"));
        }
        let table = parsed.host_str().unwrap_or_default();
        let mut config = Self::new(table)?;
        let (mut key, mut secret, mut token) = (None, None, None);
        let (mut billing, mut read, mut write) = (None, None, None);
        for (name, value) in parsed.query_pairs() {
            let value = value.into_owned();
            match name.as_ref() {
                "region" => config.region = Some(value),
                "endpoint" => config.endpoint = Some(value),
                "access_key_id" => key = Some(value),
                "secret_access_key" => secret = Some(value),
                "session_token" => token = Some(value),
                "billing" => billing = Some(value),
                "read_capacity" => read = Some(parse_number("read_capacity", &value)?),
                "write_capacity" => write = Some(parse_number("write_capacity", &value)?),
                "request_timeout_ms" => {
                    let ms = parse_number("request_timeout_ms", &value)?;
                    if ms < 1 {
                        return Err(Error::invalid(
                            "url",
                            "request_timeout_ms must be at least 1",
                        ));
                    }
                    config.request_timeout = Duration::from_millis(ms.unsigned_abs());
                }
                "renew_concurrency" => {
                    let n = parse_number("renew_concurrency", &value)?;
                    if !(1..=1024).contains(&n) {
                        return Err(Error::invalid("url", "renew_concurrency must be 1 to 1024"));
                    }
                    config.renew_concurrency = usize::try_from(n).unwrap_or(1);
                }
                "kcl_at_timestamp_ms" => {
                    let ms = u64::try_from(parse_number("kcl_at_timestamp_ms", &value)?).map_err(
                        |_| Error::invalid("url", "kcl_at_timestamp_ms must not be negative"),
                    )?;
                    config.kcl_at_timestamp = Some(ms);
                }
                "list_page_size" => {
                    let rows = parse_number("list_page_size", &value)?;
                    let rows = usize::try_from(rows).map_err(|_| {
                        Error::invalid("list_page_size", "must be 1 to 2147483647 items")
                    })?;
                    config = config.with_list_page_size(rows)?;
                }
                "kcl_multi_stream" => config.layout = KeyLayout::kcl_multi_stream(&value)?,
                "kcl_stream" => {
                    config.layout = KeyLayout::KclSingleStream {
                        stream: StreamName::new(value)?,
                    }
                }
                other => {
                    // Never echo the value: it may be a secret.
                    return Err(Error::invalid("url", format!("unknown option {other:?}")));
                }
            }
        }
        match (key, secret) {
            (Some(k), Some(s)) => {
                config.credentials = Some(StaticCredentials {
                    access_key_id: k,
                    secret_access_key: s,
                    session_token: token,
                })
            }
            (None, None) if token.is_none() => {}
            _ => {
                return Err(Error::invalid(
                    "url",
                    "access_key_id and secret_access_key must be given together",
                ));
            }
        }
        config.billing = match billing.as_deref() {
            None | Some("on-demand") | Some("on_demand") | Some("pay-per-request") => {
                if read.is_some() || write.is_some() {
                    return Err(Error::invalid("url", "capacities need billing=provisioned"));
                }
                Billing::OnDemand
            }
            Some("provisioned") => Billing::Provisioned {
                read: read.unwrap_or(5),
                write: write.unwrap_or(5),
            },
            Some(other) => return Err(Error::invalid("url", format!("unknown billing {other:?}"))),
        };
        if let Billing::Provisioned { read, write } = config.billing
            && (read < 1 || write < 1)
        {
            return Err(Error::invalid("url", "capacities must be at least 1"));
        }
        Ok(config)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The AWS region. Default: the AWS default chain (`AWS_REGION`, profile); `us-east-1`
    /// when an endpoint is set and no region is found.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (DynamoDB Local, moto). Default: none, the region's AWS endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Static credentials. Default: none, the AWS default credentials chain.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        });
        self
    }

    /// Billing of a table created by `init`. Default: [`Billing::OnDemand`].
    pub fn with_billing(mut self, billing: Billing) -> Self {
        self.billing = billing;
        self
    }

    /// The KCL single-stream layout: the table holds one app's leases for `stream`, keyed by
    /// shard id, as a KCL lease table is. Default: [`KeyLayout::Shared`].
    pub fn with_kcl_single_stream(mut self, stream: StreamName) -> Self {
        self.layout = KeyLayout::KclSingleStream { stream };
        self
    }

    /// One stream of a KCL 2.x/3.x multi-stream table: the leases whose key is
    /// `<identifier>:<shardId>`, where `identifier` is the KCL stream identifier
    /// `<account id>:<stream name>:<creation epoch>`. Fails naming `kcl_multi_stream` when
    /// the identifier has another shape. Default: [`KeyLayout::Shared`].
    pub fn with_kcl_multi_stream(mut self, identifier: &str) -> Result<Self> {
        self.layout = KeyLayout::kcl_multi_stream(identifier)?;
        Ok(self)
    }

    /// The instant, in ms since the Unix epoch, that the KCL's plain `AT_TIMESTAMP` checkpoint
    /// sentinel stands for in an adopted table: the KCL app's configured initial timestamp,
    /// which the KCL keeps in its configuration, not in the lease. Items carrying the sentinel
    /// read as `Position::AtTimestamp(ms)`, and that position is written back as the plain
    /// sentinel. Default: none; such an item is then [`checkpoint_core::Error::Corrupt`] naming
    /// `checkpoint` (and left out of listings with a warning).
    pub fn with_kcl_at_timestamp(mut self, ms: u64) -> Self {
        self.kcl_at_timestamp = Some(ms);
        self
    }

    /// Retry policy for throttling and transient faults. Default: [`Backoff::default`]
    /// (6 tries, 5 s budget). The SDK's own retries are turned off so this is the only one.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Requests in flight at once in `renew_many`. Default: 16.
    pub fn with_renew_concurrency(mut self, concurrency: usize) -> Self {
        self.renew_concurrency = concurrency.max(1);
        self
    }

    /// Time limit of one request attempt (a timeout is retried). Default: 5 s.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Items one `Scan` request of a listing (`list_leases`) evaluates: its `Limit`, so a
    /// listing of more items takes several pages, each continued from the last one's
    /// `LastEvaluatedKey`. The limit counts items before the listing's filter (other apps'
    /// items in a shared table count too), so a page may return fewer rows. Default: no limit,
    /// DynamoDB's own 1 MB pages. Fails with [`Error::InvalidInput`] naming `list_page_size`
    /// for 0 or more than `i32::MAX` (the largest `Limit` DynamoDB takes).
    pub fn with_list_page_size(mut self, rows: usize) -> Result<Self> {
        let limit = i32::try_from(rows)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Error::invalid("list_page_size", "must be 1 to 2147483647 items"))?;
        self.list_page_size = Some(limit);
        Ok(self)
    }

    /// How long `init` waits for a table to become `ACTIVE`. Default: 60 s.
    pub fn with_table_active_timeout(mut self, timeout: Duration) -> Self {
        self.table_active_timeout = timeout;
        self
    }

    /// The clock this handle times its observations by (expiry: a lease or membership record
    /// unchanged for its duration on this clock) and reports deadlines in; the deadline it
    /// writes into `leaseDeadlineMillis` is information only. No other handle ever reads it.
    /// Default: the process's monotonic clock ([`std::time::Instant`]) expressed from the
    /// wall-clock instant it was first used; handles on the same table (same endpoint, region,
    /// static or emulator credentials) then share their observations in the process. Tests inject a [`checkpoint_core::ManualClock`].
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.default_clock = false;
        self
    }
}

fn parse_number(field: &'static str, value: &str) -> Result<i64> {
    value
        .parse::<i64>()
        .map_err(|_| Error::invalid("url", format!("{field} must be an integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_parse() {
        let c = DynamoConfig::from_url(
            "dynamodb://leases?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A5055&billing=provisioned&read_capacity=3&write_capacity=4&kcl_stream=orders&request_timeout_ms=1500&renew_concurrency=4",
        )
        .unwrap();
        assert_eq!(c.table, "leases");
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5055"));
        assert_eq!(c.billing, Billing::Provisioned { read: 3, write: 4 });
        assert!(matches!(c.layout, KeyLayout::KclSingleStream { .. }));
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.renew_concurrency, 4);
        let multi = DynamoConfig::from_url(
            "dynamodb://leases?kcl_multi_stream=123456789012:orders:1700000000",
        )
        .unwrap();
        assert_eq!(
            multi.layout,
            KeyLayout::KclMultiStream {
                stream: StreamName::new("orders").unwrap(),
                identifier: "123456789012:orders:1700000000".to_owned()
            }
        );
        let plain =
            DynamoConfig::from_url("dynamodb://leases?endpoint=http://127.0.0.1:5000").unwrap();
        assert_eq!(plain.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn list_page_size_is_a_positive_scan_limit() {
        let c = DynamoConfig::from_url("dynamodb://leases?list_page_size=7").unwrap();
        assert_eq!(c.list_page_size, Some(7));
        assert_eq!(DynamoConfig::new("leases").unwrap().list_page_size, None);
        for rows in [0, i32::MAX as usize + 1] {
            let e = DynamoConfig::new("leases")
                .unwrap()
                .with_list_page_size(rows)
                .unwrap_err();
            assert_eq!(e.field(), Some("list_page_size"), "{rows}: {e}");
        }
        for url in [
            "dynamodb://leases?list_page_size=0",
            "dynamodb://leases?list_page_size=-3",
        ] {
            let e = DynamoConfig::from_url(url).unwrap_err();
            assert_eq!(e.field(), Some("list_page_size"), "{url}: {e}");
        }
    }

    #[test]
    fn bad_urls_are_rejected() {
        for url in [
            "postgres://x",
            "dynamodb://ab",
            "dynamodb://leases?colour=red",
            "dynamodb://leases?access_key_id=a",
            "dynamodb://leases?billing=free",
            "dynamodb://leases?read_capacity=3",
            "dynamodb://leases?kcl_stream=a:b",
            "dynamodb://leases?skew_allowance_ms=250",
            "dynamodb://leases?kcl_multi_stream=orders",
            "dynamodb://leases?kcl_multi_stream=12x:orders:1",
            "dynamodb://leases?request_timeout_ms=0",
            "dynamodb://leases?renew_concurrency=0",
        ] {
            assert!(DynamoConfig::from_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn credentials_never_appear_in_debug() {
        let c = DynamoConfig::from_url(
            "dynamodb://leases?access_key_id=AKIDSECRETKEYID&secret_access_key=verysecretvalue&session_token=tokentokentoken",
        )
        .unwrap();
        let shown = format!("{c:?} {:?}", c.credentials);
        for secret in ["AKIDSECRETKEYID", "verysecretvalue", "tokentokentoken"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("<redacted>"));
        let err = DynamoConfig::from_url("dynamodb://leases?secret=verysecretvalue").unwrap_err();
        assert!(!err.to_string().contains("verysecretvalue"));
    }
}
