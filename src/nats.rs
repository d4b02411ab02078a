//! The decision stream on NATS JetStream: names both ends agree on, and one
//! way to connect.
//!
//! Past one machine, sidecars publish each record as one message on
//! `sentinel.decisions.<node>` (message id = record id, so JetStream drops
//! a re-publish inside its duplicate window) into the stream
//! `SENTINEL_DECISIONS`, and every central replica consumes it through one
//! shared durable pull consumer. Other readers (a SIEM, an archiver) attach
//! consumers of their own to the same stream.
//!
//! Connections: `tls://HOST:PORT` (TLS required, client identity from
//! `KERNEL_MTLS_*`, the CA from `KERNEL_MTLS_CA_PATH`) or `nats://HOST:PORT`
//! (plain, only with `DEV_SKIP_MTLS=true`). The client reconnects forever
//! with backoff and re-reads the certificate files on every connection, so
//! a rotated identity is used from the next reconnect.

use crate::tls::ClientIdentity;
use std::time::Duration;

/// The stream every record goes to.
pub(crate) const STREAM: &str = "SENTINEL_DECISIONS";
/// Subjects of the stream; a record of node N is published on
/// `sentinel.decisions.N`.
pub(crate) const SUBJECTS: &str = "sentinel.decisions.>";
/// The durable pull consumer every central replica shares.
pub(crate) const CONSUMER: &str = "sentinel-central";
/// How long JetStream remembers message ids to drop re-publishes: at least
/// two minutes (a sidecar retries a batch within its backoff cap of 10 s,
/// a restart re-publishes what was not acknowledged).
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Whether `url` names the decision stream rather than an HTTP receiver.
pub(crate) fn is_stream_url(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

/// What every record subject starts with; the node's token follows.
const SUBJECT_PREFIX: &str = "sentinel.decisions.";

/// The subject of `node`'s records: NATS subjects are dot-separated tokens
/// without spaces or wildcards, so anything else in a node name becomes `_`.
pub(crate) fn subject_for(node: &str) -> String {
    let token: String = node.chars().map(token_char).collect();
    format!(
        "{SUBJECT_PREFIX}{}",
        if token.is_empty() { "_" } else { &token }
    )
}

/// Whether `subject` is [`subject_for`]`(node)`, without building it:
/// central asks this of every record it takes from the stream.
pub(crate) fn is_subject_for(subject: &str, node: &str) -> bool {
    let Some(token) = subject.strip_prefix(SUBJECT_PREFIX) else {
        return false;
    };
    if node.is_empty() {
        return token == "_";
    }
    let mut token = token.chars();
    node.chars().all(|c| token.next() == Some(token_char(c))) && token.next().is_none()
}

/// One character of a node name as it appears in its subject token.
fn token_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
        c
    } else {
        '_'
    }
}

/// Connection options for `url` with this identity, or why not (checked
/// at start, before anything connects).
pub(crate) fn connect_options(
    url: &str,
    identity: &ClientIdentity,
    name: &str,
) -> Result<async_nats::ConnectOptions, String> {
    crate::tls::install_crypto_provider();
    let shown = crate::secrets::redact_url(url);
    let rest = if let Some(rest) = url.strip_prefix("tls://") {
        rest
    } else if let Some(rest) = url.strip_prefix("nats://") {
        if !identity.allow_plain_http {
            return Err(format!(
                "{shown}: plain nats:// is refused; use tls:// with KERNEL_MTLS_CERT_PATH/KEY_PATH (or DEV_SKIP_MTLS=true for development)"
            ));
        }
        rest
    } else {
        return Err(format!(
            "{shown}: not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)"
        ));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "{shown}: give HOST:PORT after the scheme, nothing else"
        ));
    }
    let address: async_nats::ServerAddr = url
        .parse()
        .map_err(|e| format!("{shown}: not a NATS server address: {e}"))?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        // Start without the server: records wait in the spool meanwhile.
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100u64 << attempts.min(7)).min(10_000))
        })
        .event_callback(|event| async move {
            tracing::info!(%event, "decision stream connection");
        });
    // The client ignores credentials written in the URL: pass them on.
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    match (address.username(), address.password()) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(decode(user), decode(password));
        }
        (Some(token), None) => options = options.token(decode(token)),
        _ => {}
    }
    if url.starts_with("tls://") {
        let (Some(cert), Some(key)) = (&identity.cert, &identity.key) else {
            return Err(format!(
                "{shown}: tls:// needs a client identity: set KERNEL_MTLS_CERT_PATH and KERNEL_MTLS_KEY_PATH"
            ));
        };
        for path in [cert, key].into_iter().chain(identity.ca.as_ref()) {
            std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        options = options
            .require_tls(true)
            .add_client_certificate(cert.clone(), key.clone());
        if let Some(ca) = &identity.ca {
            options = options.add_root_certificates(ca.clone());
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_become_one_subject_token() {
        assert_eq!(subject_for("kernel-7f9c"), "sentinel.decisions.kernel-7f9c");
        assert_eq!(
            subject_for("pod.ns.svc cluster*>"),
            "sentinel.decisions.pod_ns_svc_cluster__"
        );
        assert_eq!(subject_for(""), "sentinel.decisions._");
    }

    proptest::proptest! {
        #[test]
        fn the_subject_check_agrees_with_the_subject(
            node in "[a-z0-9._ é>*-]{0,6}",
            other in "[a-z0-9._ é>*-]{0,6}",
        ) {
            let subject = subject_for(&node);
            proptest::prop_assert!(is_subject_for(&subject, &node));
            proptest::prop_assert_eq!(
                is_subject_for(&subject, &other),
                subject == subject_for(&other)
            );
            let longer = format!("{subject}x");
            proptest::prop_assert!(!is_subject_for(&longer, &node));
            proptest::prop_assert!(!is_subject_for(&node, &node));
        }
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let plain = ClientIdentity::default();
        let dev = ClientIdentity {
            allow_plain_http: true,
            ..ClientIdentity::default()
        };
        let refused = connect_options("nats://127.0.0.1:4222", &plain, "t").unwrap_err();
        assert!(refused.contains("DEV_SKIP_MTLS"), "{refused}");
        assert!(connect_options("nats://127.0.0.1:4222", &dev, "t").is_ok());
        let refused = connect_options("tls://127.0.0.1:4222", &dev, "t").unwrap_err();
        assert!(refused.contains("KERNEL_MTLS_CERT_PATH"), "{refused}");
        let refused = connect_options("nats://u:pw@h:4222/x", &dev, "t").unwrap_err();
        assert!(!refused.contains("pw"), "{refused}");
        assert!(is_stream_url("tls://h:1") && !is_stream_url("https://h/x"));
        let refused = connect_options("nats://127.0.0.1:abc", &dev, "t").unwrap_err();
        assert!(refused.contains("not a NATS server address"), "{refused}");
        // pragma: allowlist nextline secret
        assert!(connect_options("nats://app:p%40ss@127.0.0.1:4222", &dev, "t").is_ok());
    }
}
