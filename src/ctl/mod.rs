//! `sentinelnet ctl`: central's registry from the command line
//! (docs/ctl.md). One function per command: build the request, send it
//! over mTLS, print a table for people ([`render`]) or central's JSON.
//!
//! Errors are one line: central's refusal (exit 1) as its status and
//! message; bad input or an unreachable central (exit 2) as what and where.

mod render;

use crate::bundle::{Bundle, Source};
use crate::policy::{Policy, PolicyDocument};
use crate::simulate::Report;
use crate::tls::ClientIdentity;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Where central is and who we are.
#[derive(Debug, Clone)]
pub struct CtlConfig {
    pub central: String,
    pub identity: ClientIdentity,
    /// `--format json`: central's JSON instead of tables.
    pub json: bool,
}

/// One `ctl` command (docs/ctl.md); its flags are parsed by clap at the
/// command line, which hands the whole value over.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Create or update a bundle's settings and policies from a bundle
    /// directory: new policies created, changed ones versioned, each moved
    /// toward the state its file declares; at most one new revision.
    Push {
        /// The bundle directory (bundle.json, policies/*.json).
        dir: PathBuf,
        /// The bundle's name at central.
        #[arg(long)]
        bundle: String,
        /// Why (recorded with every version and transition).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Policies: id, version, state, canary percent, severity.
    Policies {
        #[arg(long)]
        bundle: Option<String>,
    },
    /// Move a policy along its lifecycle.
    Transition {
        id: String,
        /// draft, simulating, canary, active or deprecated.
        #[arg(long, value_parser = ["draft", "simulating", "canary", "active", "deprecated"])]
        to: String,
        /// Canary percent (0-100), with --to canary.
        #[arg(long, value_parser = parse_percent)]
        percent: Option<f64>,
        #[arg(long)]
        reason: String,
    },
    /// Sign a policy's activation manifest and submit the approval; the
    /// key file's name is the approver's name.
    Approve {
        id: String,
        /// The approver's private key: a file from keygen or a pkcs11: URI
        /// (its name, the file stem or the token label, is the approver).
        #[arg(long, value_parser = crate::keys::KeySource::parse)]
        key: crate::keys::KeySource,
    },
    /// Rule, history, approvals, canary windows, recent decisions.
    Explain { id: String },
    /// Stored decision records, newest first.
    Decisions {
        #[arg(long)]
        policy: Option<String>,
        /// allow or deny.
        #[arg(long, value_parser = ["allow", "deny"])]
        decision: Option<String>,
        /// RFC 3339 time.
        #[arg(long, value_parser = parse_rfc3339)]
        since: Option<String>,
        /// RFC 3339 time.
        #[arg(long, value_parser = parse_rfc3339)]
        until: Option<String>,
        /// At most this many (central caps it at 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Include each record's (masked) input document.
        #[arg(long)]
        with_input: bool,
    },
    /// Feedback on a stored decision.
    Label {
        #[arg(value_name = "DECISION_ID")]
        id: String,
        #[arg(value_parser = ["false_positive", "true_positive"])]
        label: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Simulate candidate policies against the live bundle on stored records.
    Simulate {
        #[arg(long)]
        bundle: String,
        /// Policy documents (JSON files).
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Stored records with inputs and labels, as NDJSON.
    Export {
        /// RFC 3339 time.
        #[arg(long, value_parser = parse_rfc3339)]
        since: Option<String>,
        /// RFC 3339 time.
        #[arg(long, value_parser = parse_rfc3339)]
        until: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Which sidecars hold which revision.
    Fleet,
    /// Every decision chain's verification state.
    Chains,
}

/// A canary percentage.
fn parse_percent(value: &str) -> std::result::Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{value:?} is not a percentage between 0 and 100")),
    }
}

/// An RFC 3339 time (`2026-11-24T00:00:00Z`), checked here so a typo is
/// bad input (exit 2), not central's refusal.
fn parse_rfc3339(value: &str) -> std::result::Result<String, String> {
    crate::timestamp::parse_rfc3339(value)
        .map(|_| value.to_owned())
        .ok_or_else(|| format!("{value:?} is not an RFC 3339 time (e.g. 2026-11-24T00:00:00Z)"))
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Central answered with an error status (exit 1).
    #[error("central refused: {status} {message}")]
    Refused { status: u16, message: String },
    /// Bad input, or central could not be reached (exit 2).
    #[error("{0}")]
    Usage(String),
}

type Result<T> = std::result::Result<T, CtlError>;

/// Run one command to completion.
pub fn run(config: CtlConfig, command: CtlCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start the runtime: {e}")))?;
    // Exports and simulations may take long; everything else is quick, so
    // a hung central fails it within a minute.
    let timeout = match command {
        CtlCommand::Export { .. } | CtlCommand::Simulate { .. } => Duration::from_secs(3600),
        _ => Duration::from_secs(60),
    };
    runtime.block_on(async move {
        let central = Central::new(&config, timeout)?;
        match central.run(command).await {
            // `ctl … | head`: the reader left; not an error worth a line.
            Err(CtlError::Usage(message)) if message == BROKEN_PIPE => Ok(()),
            other => other,
        }
    })
}

struct Central {
    base: String,
    http: reqwest::Client,
    json: bool,
}

/// Percent-encode a path segment or query value.
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A candidate policy file, checked like a bundle's policy (one line
/// naming the file, the policy and the JSON pointer).
fn read_policy_file(path: &PathBuf) -> Result<Value> {
    let display = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| CtlError::Usage(format!("{display}: cannot read: {e}")))?;
    let (document, value): (PolicyDocument, Value) =
        crate::bundle::parse_json(&display, &bytes).map_err(|e| CtlError::Usage(e.to_string()))?;
    Policy::compile(document).map_err(|e| {
        CtlError::Usage(format!(
            "{display}: policy \"{}\" at {}: {}",
            e.policy, e.pointer, e.message
        ))
    })?;
    Ok(value)
}

impl Central {
    fn new(config: &CtlConfig, timeout: Duration) -> Result<Central> {
        let base = config.central.trim_end_matches('/').to_owned();
        if base.is_empty() {
            return Err(CtlError::Usage(
                "no central: give --central https://HOST:PORT or set SENTINEL_CENTRAL_URL".into(),
            ));
        }
        let identity = &config.identity;
        if base.starts_with("https://") && (identity.cert.is_none() || identity.key.is_none()) {
            return Err(CtlError::Usage(format!(
                "{base}: central needs a client certificate: --cert and --key (SENTINEL_CTL_CERT/SENTINEL_CTL_KEY, or KERNEL_MTLS_CERT_PATH/KERNEL_MTLS_KEY_PATH)"
            )));
        }
        let http = identity
            .client_for(&base, timeout)
            .map_err(CtlError::Usage)?;
        Ok(Central {
            base,
            http,
            json: config.json,
        })
    }

    /// Send and read the whole answer; an error status is a refusal with
    /// central's `error` message.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            CtlError::Usage(format!("cannot reach central at {url}: {}", root_cause(&e)))
        })?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CtlError::Usage(format!("{url}: the answer broke off: {e}")))?;
        Ok(bytes.to_vec())
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.decode(self.send(Method::GET, path, None).await?)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.decode(self.send(Method::POST, path, Some(body)).await?)
    }

    fn decode(&self, bytes: Vec<u8>) -> Result<Value> {
        serde_json::from_slice(&bytes)
            .map_err(|e| CtlError::Usage(format!("central's answer is not JSON: {e}")))
    }

    /// `--format json`: central's answer; otherwise the table.
    fn print(&self, value: &Value, table: impl FnOnce(&Value) -> String) -> Result<()> {
        let text = if self.json {
            serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
        } else {
            table(value)
        };
        write_stdout(text.as_bytes())
    }

    /// The bundle a policy id belongs to (ids are unique across a central).
    async fn bundle_of(&self, id: &str) -> Result<String> {
        let explained = self
            .get(&format!("/sentinelnet/policy/{}/explain", encode(id)))
            .await?;
        explained["bundle"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CtlError::Usage(format!("central's explain of {id} names no bundle")))
    }

    async fn run(&self, command: CtlCommand) -> Result<()> {
        match command {
            CtlCommand::Push {
                dir,
                bundle,
                reason,
            } => self.push(dir, &bundle, reason).await,
            CtlCommand::Policies { bundle } => self.policies(bundle).await,
            CtlCommand::Transition {
                id,
                to,
                percent,
                reason,
            } => {
                let bundle = self.bundle_of(&id).await?;
                let mut body = json!({"to": to, "reason": reason});
                if let Some(percent) = percent {
                    body["canaryPercent"] = json!(percent);
                }
                let path = format!(
                    "/v1/bundles/{}/policies/{}/transition",
                    encode(&bundle),
                    encode(&id)
                );
                let status = self.post(&path, &body).await?;
                self.print(&status, |s| {
                    let share = if s["state"] == "canary" {
                        format!(" (canary {}%)", render::cell(&s["canaryPercent"]))
                    } else {
                        String::new()
                    };
                    format!(
                        "{} v{}: {}{share}{}\n",
                        render::cell(&s["id"]),
                        render::cell(&s["version"]),
                        render::cell(&s["state"]),
                        published(&s["publishedRevision"])
                    )
                })?;
                Ok(())
            }
            CtlCommand::Approve { id, key } => self.approve(&id, key).await,
            CtlCommand::Explain { id } => {
                let explained = self
                    .get(&format!("/sentinelnet/policy/{}/explain", encode(&id)))
                    .await?;
                self.print(&explained, render::explain)?;
                Ok(())
            }
            CtlCommand::Decisions {
                policy,
                decision,
                since,
                until,
                limit,
                with_input,
            } => {
                let path = format!(
                    "/v1/decisions{}",
                    query(&[
                        ("policy", policy),
                        ("decision", decision),
                        ("since", since),
                        ("until", until),
                        ("limit", limit.map(|l| l.to_string())),
                        ("withInput", with_input.then(|| "true".to_owned())),
                    ])
                );
                let answer = self.get(&path).await?;
                self.print(&answer, |a| {
                    render::table(
                        &[
                            "TIME", "DECISION", "STATUS", "POLICY", "NODE", "REQUEST", "LABEL",
                            "ID",
                        ],
                        &render::rows_of(
                            &a["decisions"],
                            &[
                                "ts",
                                "decision",
                                "status",
                                "policyId",
                                "node",
                                "requestId",
                                "label",
                                "id",
                            ],
                        ),
                    )
                })?;
                Ok(())
            }
            CtlCommand::Label { id, label, note } => {
                let mut body = json!({ "label": label });
                if let Some(note) = note {
                    body["note"] = json!(note);
                }
                let path = format!("/v1/decisions/{}/feedback", encode(&id));
                let record = self.post(&path, &body).await?;
                self.print(&record, |r| {
                    let count = r["labels"].as_array().map_or(0, Vec::len);
                    format!(
                        "{}: labelled {} ({} label{} so far)\n",
                        render::cell(&r["id"]),
                        render::cell(&r["label"]),
                        count,
                        if count == 1 { "" } else { "s" }
                    )
                })?;
                Ok(())
            }
            CtlCommand::Simulate { bundle, policies } => {
                let documents = policies
                    .iter()
                    .map(read_policy_file)
                    .collect::<Result<Vec<_>>>()?;
                let report = self
                    .post(
                        "/v1/simulate",
                        &json!({"bundle": bundle, "policies": documents}),
                    )
                    .await?;
                self.print(&report, |r| {
                    match serde_json::from_value::<Report>(r.clone()) {
                        Ok(report) => report.table(),
                        Err(_) => serde_json::to_string_pretty(r).unwrap_or_default(),
                    }
                })?;
                Ok(())
            }
            CtlCommand::Export {
                since,
                until,
                output,
            } => self.export(since, until, output).await,
            CtlCommand::Fleet => {
                let fleet = self.get("/v1/fleet").await?;
                self.print(&fleet, |f| {
                    render::table(
                        &[
                            "IDENTITY",
                            "NODE",
                            "BUNDLE",
                            "REVISION",
                            "NEWEST",
                            "CURRENT",
                            "LAST SEEN",
                        ],
                        &render::rows_of(
                            &f["sidecars"],
                            &[
                                "identity", "node", "bundle", "revision", "newest", "current",
                                "lastSeen",
                            ],
                        ),
                    )
                })?;
                Ok(())
            }
            CtlCommand::Chains => {
                let chains = self.get("/v1/audit/chains").await?;
                self.print(&chains, |c| {
                    render::table(
                        &[
                            "NODE",
                            "CHAIN",
                            "STATUS",
                            "LAST SEQ",
                            "VERIFIED THROUGH",
                            "SIGNED THROUGH",
                            "GAPS",
                            "BREAKS",
                        ],
                        &render::rows_of(
                            &c["chains"],
                            &[
                                "node",
                                "chainId",
                                "status",
                                "lastSeq",
                                "verifiedThrough",
                                "signedThrough",
                                "gaps",
                                "breaks",
                            ],
                        ),
                    )
                })?;
                Ok(())
            }
        }
    }

    /// Validate the directory like `bundle build`, then send its settings
    /// and every policy file in one request.
    async fn push(&self, dir: PathBuf, bundle: &str, reason: Option<String>) -> Result<()> {
        if !dir.is_dir() {
            return Err(CtlError::Usage(format!(
                "{}: not a bundle directory",
                dir.display()
            )));
        }
        let files = Source::Directory(dir.clone())
            .read()
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let loaded = Bundle::from_files(&files).map_err(|e| CtlError::Usage(e.to_string()))?;
        let mut policies = Vec::new();
        for file in loaded.policy_files.values() {
            let bytes = files.get(file).map(Vec::as_slice).unwrap_or_default();
            let document: Value = serde_json::from_slice(bytes)
                .map_err(|e| CtlError::Usage(format!("{}/{file}: {e}", dir.display())))?;
            policies.push(document);
        }
        let mut body = json!({
            "defaultDecision": loaded.manifest.default_decision,
            "policies": policies,
        });
        if let Some(reason) = reason {
            body["reason"] = json!(reason);
        }
        let report = self
            .post(&format!("/v1/bundles/{}/push", encode(bundle)), &body)
            .await?;
        self.print(&report, |r| {
            let mut out = render::table(
                &[
                    "POLICY", "CONTENT", "VERSION", "STATE", "CANARY", "WANTED", "NOTE",
                ],
                &render::rows_of(
                    &r["policies"],
                    &[
                        "id",
                        "content",
                        "version",
                        "state",
                        "canaryPercent",
                        "wanted",
                        "note",
                    ],
                ),
            );
            out.push_str(&format!(
                "bundle {} (default {}){}\n",
                render::cell(&r["bundle"]),
                render::cell(&r["defaultDecision"]),
                published(&r["publishedRevision"])
            ));
            out
        })?;
        Ok(())
    }

    async fn policies(&self, bundle: Option<String>) -> Result<()> {
        let names = match bundle {
            Some(name) => vec![name],
            None => self.get("/v1/bundles").await?["bundles"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .filter_map(|b| b["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut bundles = Vec::new();
        for name in names {
            bundles.push(
                self.get(&format!("/v1/bundles/{}/policies", encode(&name)))
                    .await?,
            );
        }
        let answer = json!({ "bundles": bundles });
        self.print(&answer, |a| {
            let mut rows = Vec::new();
            for bundle in a["bundles"].as_array().into_iter().flatten() {
                for mut row in render::rows_of(
                    &bundle["policies"],
                    &[
                        "id",
                        "version",
                        "state",
                        "canaryPercent",
                        "severity",
                        "effect",
                    ],
                ) {
                    row.insert(0, render::cell(&bundle["name"]));
                    rows.push(row);
                }
            }
            render::table(
                &[
                    "BUNDLE", "POLICY", "VERSION", "STATE", "CANARY %", "SEVERITY", "EFFECT",
                ],
                &rows,
            )
        })?;
        Ok(())
    }

    /// Fetch the manifest, show what is approved, sign it with the key
    /// (its file name is the approver's name), submit.
    async fn approve(&self, id: &str, key: crate::keys::KeySource) -> Result<()> {
        let key = key.open().map_err(|e| CtlError::Usage(e.to_string()))?;
        let bundle = self.bundle_of(id).await?;
        let base = format!("/v1/bundles/{}/policies/{}", encode(&bundle), encode(id));
        let manifest = self
            .send(Method::GET, &format!("{base}/manifest"), None)
            .await?;
        let shown: Value = serde_json::from_slice(&manifest)
            .map_err(|e| CtlError::Usage(format!("central's manifest is not JSON: {e}")))?;
        // What is being approved, shown before it is signed.
        if !self.json {
            eprint!(
                "{}",
                render::fields(&[
                    (
                        "approving",
                        format!(
                            "{} v{}",
                            render::cell(&shown["policyId"]),
                            render::cell(&shown["version"])
                        )
                    ),
                    ("bundle", render::cell(&shown["bundle"])),
                    ("severity", render::cell(&shown["severity"])),
                    ("document sha256", render::cell(&shown["documentSha256"])),
                    ("as approver", key.key_id().to_owned()),
                ])
            );
        }
        let signature = key
            .sign_base64(&manifest)
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        // Naming the version makes a race with a new version a clear 409,
        // not a signature mismatch.
        let mut body = json!({"approver": key.key_id(), "signature": signature});
        if let Some(version) = shown["version"].as_i64() {
            body["version"] = json!(version);
        }
        let answer = self.post(&format!("{base}/approvals"), &body).await?;
        self.print(&json!({"manifest": shown, "approval": answer}), |a| {
            let approval = &a["approval"];
            format!(
                "approved {} v{}: {} of {} approvals ({})\n",
                render::cell(&approval["policyId"]),
                render::cell(&approval["version"]),
                render::cell(&approval["approvals"]),
                render::cell(&approval["required"]),
                render::cell(&approval["approvers"])
            )
        })?;
        Ok(())
    }

    /// Stream the NDJSON export to a file or stdout.
    async fn export(
        &self,
        since: Option<String>,
        until: Option<String>,
        output: Option<PathBuf>,
    ) -> Result<()> {
        use std::io::Write;
        let path = format!(
            "/v1/audit/export{}",
            query(&[("since", since), ("until", until)])
        );
        let url = format!("{}{path}", self.base);
        let mut response = self.http.get(&url).send().await.map_err(|e| {
            CtlError::Usage(format!("cannot reach central at {url}: {}", root_cause(&e)))
        })?;
        if response.status() != StatusCode::OK {
            return Err(refusal(response).await);
        }
        let mut out: Box<dyn Write> = match &output {
            Some(file) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(file).map_err(|e| {
                    CtlError::Usage(format!("{}: cannot write: {e}", file.display()))
                })?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut records = 0usize;
        let write_err =
            |e: std::io::Error| CtlError::Usage(format!("cannot write the export: {e}"));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CtlError::Usage(format!("{url}: the export broke off: {e}")))?
        {
            records += chunk.iter().filter(|&&b| b == b'\n').count();
            out.write_all(&chunk).map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
        if let Some(file) = output {
            eprintln!("wrote {records} records to {}", file.display());
        }
        Ok(())
    }
}

/// The one-line refusal of an error answer: its status and central's
/// `error` message (or the body's text, on one line, shortened).
async fn refusal(response: reqwest::Response) -> CtlError {
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let mut message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.chars().count() > 400 {
        message = message.chars().take(400).collect::<String>() + "…";
    }
    let reason = status.canonical_reason().unwrap_or("");
    CtlError::Refused {
        status: status.as_u16(),
        message: if message.is_empty() {
            reason.to_owned()
        } else {
            format!("{reason}: {message}")
        },
    }
}

/// What a closed stdout (`ctl … | head`) is reported as internally.
const BROKEN_PIPE: &str = "stdout closed";

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                CtlError::Usage(BROKEN_PIPE.into())
            } else {
                CtlError::Usage(format!("cannot write to stdout: {e}"))
            }
        })
}

fn published(revision: &Value) -> String {
    match revision.as_str() {
        Some(r) => format!(", published {r}"),
        None => ", no new revision".to_owned(),
    }
}

/// The innermost cause of a connection error (reqwest's own text is
/// "error sending request for url …").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
