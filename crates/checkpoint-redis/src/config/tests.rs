//! Unit tests of [`RedisConfig`](super::RedisConfig): URL parsing, the builder, redaction.

use super::*;

#[test]
fn parses_every_part_and_hides_the_password() {
    let c = RedisConfig::from_url(
        "redis://bob:p%40ss@example.org:6380/3?prefix=a:b&connection_timeout_ms=250&response_timeout_ms=900&list_page_size=7",
    )
    .unwrap();
    assert_eq!((c.host(), c.port(), c.db()), ("example.org", 6380, 3));
    assert_eq!(c.username(), Some("bob"));
    assert_eq!(c.password.as_deref(), Some("p@ss"));
    assert!(c.has_password());
    assert_eq!(c.prefix(), "a:b");
    assert_eq!(c.connection_timeout(), Duration::from_millis(250));
    assert_eq!(c.response_timeout(), Duration::from_millis(900));
    assert_eq!(c.list_page_size(), 7);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("p@ss") && !shown.contains("p%40ss"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"));
    let info = format!("{:?}", c.connection_info().unwrap());
    assert!(!info.contains("p@ss"), "{info}");
}

#[test]
fn cluster_urls_name_every_node() {
    let c = RedisConfig::from_url(
        "redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/?prefix=x&wait_replicas=1",
    )
    .unwrap();
    assert_eq!(
        c.cluster_nodes().unwrap(),
        &[
            ("10.0.0.1".to_owned(), 7000),
            ("10.0.0.2".to_owned(), DEFAULT_PORT),
            ("::1".to_owned(), 7002)
        ]
    );
    assert_eq!(c.username(), Some("u"));
    assert!(c.has_password() && c.prefix() == "x" && !c.tls());
    assert_eq!(
        c.wait_for_replicas(),
        Some(WaitForReplicas {
            replicas: 1,
            timeout: DEFAULT_WAIT_TIMEOUT
        })
    );
    assert!(!format!("{c:?}").contains("p@ss"));
    let built = RedisConfig::new()
        .with_username("u")
        .with_password("p@ss")
        .with_host("10.0.0.1")
        .with_port(7000)
        .with_prefix("x")
        .with_cluster_nodes([
            ("10.0.0.1", 7000),
            ("10.0.0.2", DEFAULT_PORT),
            ("::1", 7002),
        ])
        .with_wait_for_replicas(1, DEFAULT_WAIT_TIMEOUT);
    assert_eq!(c, built);
    assert!(
        RedisConfig::from_url("redis+cluster://h:1")
            .unwrap()
            .is_cluster()
    );
    assert!(!RedisConfig::from_url("redis://h:1").unwrap().is_cluster());
    let field = |url: &str| RedisConfig::from_url(url).unwrap_err().field();
    assert_eq!(field("redis+cluster://h:1,,h:2/"), Some("cluster_nodes"));
    assert_eq!(field("redis+cluster://h:x/"), Some("cluster_nodes"));
    assert_eq!(field("redis+cluster://h:1/2"), Some("db"));
    assert_eq!(field("redis://h/?wait_replicas=0"), Some("wait_replicas"));
    assert_eq!(
        field("redis://h/?wait_timeout_ms=5"),
        Some("wait_timeout_ms")
    );
    assert_eq!(
        field("redis://h/?wait_replicas=1&wait_timeout_ms=0"),
        Some("wait_timeout_ms")
    );
    #[cfg(not(feature = "tls"))]
    assert_eq!(field("rediss+cluster://h:1"), Some("tls"));
    #[cfg(feature = "tls")]
    assert!(RedisConfig::from_url("rediss+cluster://h:1").unwrap().tls());
}

#[test]
fn url_and_builder_agree() {
    let from_url = RedisConfig::from_url("redis://127.0.0.1").unwrap();
    assert_eq!(from_url, RedisConfig::new());
    assert_eq!(
        RedisConfig::from_url("redis://[::1]:7000/").unwrap().host(),
        "::1"
    );
}

#[test]
fn bad_urls_name_the_field_and_never_echo_the_password() {
    let field = |url: &str| RedisConfig::from_url(url).unwrap_err().field();
    assert_eq!(field("http://h"), Some("url"));
    assert_eq!(field("not a url"), Some("url"));
    assert_eq!(field("redis://h/x"), Some("db"));
    assert_eq!(field("redis://h?prefix={x}"), Some("prefix"));
    assert_eq!(field("redis://h?prefix="), Some("prefix"));
    assert_eq!(field("redis://h?prefix=a%20b"), Some("prefix"));
    assert_eq!(field("redis://h?other=1"), Some("url"));
    assert_eq!(field("redis://h#frag"), Some("url"));
    assert_eq!(field("redis://h?list_page_size=0"), Some("list_page_size"));
    assert_eq!(
        field("redis://h?response_timeout_ms=0"),
        Some("response_timeout_ms")
    );
    assert_eq!(
        field("redis://h?connection_timeout_ms=x"),
        Some("connection_timeout_ms")
    );
    let err = RedisConfig::from_url("redis://u:hunter2@h/x").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    #[cfg(not(feature = "tls"))]
    assert_eq!(field("rediss://h"), Some("tls"));
    #[cfg(feature = "tls")]
    assert!(RedisConfig::from_url("rediss://h").unwrap().tls());
}
