//! Policy bundles: reading (directory or `.tar.gz`), all-or-nothing
//! validation, packing, and watching for new revisions.
//!
//! A bundle is a set of files (docs/bundles.md). Everything is read into memory
//! first ([`BundleFiles`]), then validated as a whole, so a bundle either
//! becomes a complete [`Bundle`] or a single [`BundleError`] naming the file,
//! policy and JSON pointer at fault.

pub(crate) mod archive;
pub(crate) mod fetch;
pub mod signing;
pub(crate) mod watch;

use crate::policy::{Policy, PolicyDocument, PolicySet, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tls::ClientIdentity;
pub use archive::{pack, unpack};
pub use fetch::RemoteSource;

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BundleManifest {
    pub name: String,
    pub revision: String,
    pub default_decision: Verdict,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One case of `tests/*.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    pub name: String,
    pub input: Value,
    pub expect: Expectation,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expectation {
    pub decision: Verdict,
    /// The deciding policy; `null` asserts that the default decided.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_id: Option<Option<String>>,
}

/// Distinguish an absent `policyId` (not checked) from `null` (default decided).
fn present_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A bundle's raw files by relative path (`bundle.json`, `policies/a.json`, …).
pub type BundleFiles = BTreeMap<String, Vec<u8>>;

/// A validated, compiled bundle.
#[derive(Debug)]
pub struct Bundle {
    pub name: Arc<str>,
    pub revision: Arc<str>,
    pub manifest: BundleManifest,
    pub policies: PolicySet,
    /// Policy id → the file it came from.
    pub policy_files: BTreeMap<String, String>,
    pub tests: Vec<(String, Vec<PolicyTest>)>,
    /// SHA-256 over every file: identifies the content, whatever the revision says.
    pub digest: String,
    /// The trusted key that signed it, when signatures are checked.
    pub signer: Option<String>,
}

/// Why a bundle was refused. Display gives one line:
/// `FILE: policy "ID" at /POINTER: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    pub file: String,
    pub policy: Option<String>,
    pub pointer: Option<String>,
    pub message: String,
}

impl BundleError {
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        BundleError {
            file: file.into(),
            policy: None,
            pointer: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some(policy) = &self.policy {
            write!(f, " policy \"{policy}\"")?;
        }
        if let Some(pointer) = &self.pointer {
            write!(f, " at {pointer}")?;
        }
        if self.policy.is_some() || self.pointer.is_some() {
            f.write_str(":")?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for BundleError {}

/// Where a bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Directory(PathBuf),
    Archive(PathBuf),
    /// A registry URL (`https://…/v1/bundles/NAME`), pulled over mTLS.
    Remote(RemoteSource),
}

/// How remote sources are reached: read once from the command line.
#[derive(Debug, Clone, Default)]
pub struct RemoteSettings {
    pub identity: ClientIdentity,
    /// `--bundle-max-bytes`.
    pub max_bytes: u64,
    /// The sidecar's node name, for central's fleet view.
    pub node: Option<String>,
}

impl Source {
    /// Interpret a `--bundle` value; a URL is reached with `remote`.
    pub fn parse(spec: &str, remote: &RemoteSettings) -> Result<Source, BundleError> {
        if spec.starts_with("https://") || spec.starts_with("http://") {
            return Ok(Source::Remote(RemoteSource {
                url: spec.to_owned(),
                identity: remote.identity.clone(),
                max_bytes: remote.max_bytes,
                node: remote.node.clone(),
            }));
        }
        let path = PathBuf::from(spec);
        if spec.ends_with(".tar.gz") || spec.ends_with(".tgz") {
            return Ok(Source::Archive(path));
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Source::Directory(path)),
            Ok(_) => Err(BundleError::file(
                spec,
                "not a bundle: expected a directory or a .tar.gz file",
            )),
            Err(e) => Err(BundleError::file(spec, format!("cannot open bundle: {e}"))),
        }
    }

    /// The local path, for directory and archive sources.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Directory(p) | Source::Archive(p) => Some(p),
            Source::Remote(_) => None,
        }
    }

    /// Read every bundle file into memory.
    pub fn read(&self) -> Result<BundleFiles, BundleError> {
        match self {
            Source::Directory(dir) => read_directory(dir),
            Source::Archive(file) => {
                let fail = |message: String| BundleError::file(file.display().to_string(), message);
                let meta =
                    std::fs::metadata(file).map_err(|e| fail(format!("cannot read: {e}")))?;
                if !meta.is_file() {
                    return Err(fail("not a regular file".into()));
                }
                // A compressed archive is never larger than what it may
                // unpack to.
                let mut bytes = Vec::new();
                std::fs::File::open(file)
                    .and_then(|f| f.take(archive::MAX_TOTAL_BYTES + 1).read_to_end(&mut bytes))
                    .map_err(|e| fail(format!("cannot read: {e}")))?;
                if bytes.len() as u64 > archive::MAX_TOTAL_BYTES {
                    return Err(fail(format!(
                        "file is larger than {} bytes",
                        archive::MAX_TOTAL_BYTES
                    )));
                }
                archive::unpack(&bytes)
                    .map_err(|message| BundleError::file(file.display().to_string(), message))
            }
            Source::Remote(remote) => read_remote(remote),
        }
    }

    /// Read and validate (signatures are not checked).
    pub fn load(&self) -> Result<Bundle, BundleError> {
        Bundle::from_files(&self.read()?)
    }

    /// Read, check the signature against `trusted` (when given), validate.
    pub fn load_trusted(
        &self,
        trusted: Option<&signing::TrustedKeys>,
    ) -> Result<Bundle, BundleError> {
        Bundle::from_trusted_files(&self.read()?, trusted)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Directory(p) | Source::Archive(p) => write!(f, "{}", p.display()),
            Source::Remote(remote) => f.write_str(&crate::secrets::redact_url(&remote.url)),
        }
    }
}

/// One blocking fetch, for the CLI (`eval`, `test`, `bundle verify`).
fn read_remote(remote: &RemoteSource) -> Result<BundleFiles, BundleError> {
    let url = remote.url.as_str();
    let fail = |message: String| BundleError::file(url, message);
    let fetcher = fetch::Fetcher::new(remote).map_err(|e| {
        // The client's own message already names the URL.
        let message = e.to_string();
        fail(
            message
                .strip_prefix(&format!("{url}: "))
                .unwrap_or(&message)
                .to_owned(),
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    match runtime
        .block_on(fetcher.fetch(None, None))
        .map_err(|e| fail(e.to_string()))?
    {
        fetch::Fetched::Bundle { bytes, .. } => archive::unpack(&bytes).map_err(fail),
        fetch::Fetched::NotModified => Err(fail(
            "the registry answered 304 to an unconditional GET".into(),
        )),
    }
}

/// Largest single file a bundle may hold.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// The files of a bundle directory. Symlinks are followed, which is how a
/// Kubernetes ConfigMap volume presents its files (`..data` indirection);
/// names starting with `.` other than `.signatures.json` are skipped.
fn read_directory(dir: &Path) -> Result<BundleFiles, BundleError> {
    let mut files = BundleFiles::new();
    // I/O errors name the path as found (`adir/bundle.json`), so a wrong
    // directory shows; content errors name the file inside the bundle.
    let read = |rel: &str| -> Result<Vec<u8>, BundleError> {
        let path = dir.join(rel);
        let fail = |message: String| BundleError::file(path.display().to_string(), message);
        // Only regular files (symlinks followed): a named pipe would block
        // the loader for good and a device such as /dev/zero never ends.
        let meta = std::fs::metadata(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        let file = std::fs::File::open(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 20));
        // Bounded even if the file grows after the size was read.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(fail(format!("file is larger than {MAX_FILE_BYTES} bytes")));
        }
        Ok(bytes)
    };
    files.insert("bundle.json".into(), read("bundle.json")?);
    if dir.join(".signatures.json").exists() {
        files.insert(".signatures.json".into(), read(".signatures.json")?);
    }
    for sub in ["policies", "tests"] {
        let sub_dir = dir.join(sub);
        if !sub_dir.exists() {
            if sub == "policies" {
                // A directory caught while it is being replaced (a policies/
                // moved away, an rsync half done) would otherwise activate
                // no policies: the default decision for every request.
                return Err(BundleError::file(
                    sub_dir.display().to_string(),
                    "missing: a bundle keeps its policies in policies/ (an empty directory for none)",
                ));
            }
            continue;
        }
        let entries = std::fs::read_dir(&sub_dir)
            .map_err(|e| BundleError::file(sub, format!("cannot list: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| BundleError::file(sub, format!("cannot list: {e}")))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let rel = format!("{sub}/{name}");
            files.insert(rel.clone(), read(&rel)?);
        }
    }
    Ok(files)
}

/// Parse `bytes` as JSON, then deserialize it, with errors naming the JSON
/// pointer of the offending field.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    file: &str,
    bytes: &[u8],
) -> Result<(T, Value), BundleError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        // serde would say only "expected value at line 1 column 1".
        return Err(BundleError::file(
            file,
            "invalid JSON: the file starts with a UTF-8 byte-order mark; save it without one",
        ));
    }
    let value =
        strict_json(bytes).map_err(|e| BundleError::file(file, format!("invalid JSON: {e}")))?;
    let typed = deserialize_value(file, &value)?;
    Ok((typed, value))
}

/// Parse JSON whose objects never repeat a key. serde_json keeps the last
/// of two equal keys without a word, so `"effect": "deny", "effect":
/// "allow"` in a policy would quietly allow; here it is an error naming
/// the key and where it repeats (`duplicate key "effect" at line 1 column
/// 40`). Policies, bundle manifests and central's request bodies are read
/// this way.
pub(crate) fn strict_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(bytes).map(|v| v.0)
}

/// A JSON value read by [`strict_json`]'s rule.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?}"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn deserialize_value<T: serde::de::DeserializeOwned>(
    file: &str,
    value: &Value,
) -> Result<T, BundleError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = pointer_of(e.path());
        BundleError {
            file: file.to_owned(),
            policy: value.get("id").and_then(Value::as_str).map(str::to_owned),
            pointer: Some(pointer),
            message: e.inner().to_string(),
        }
    })
}

/// Deserialize `value`; on failure, the JSON pointer of the offending
/// field (empty at the top) and why.
pub(crate) fn typed_at<T: serde::de::DeserializeOwned>(
    value: &Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = pointer_of(e.path());
        let pointer = if pointer == "/" {
            String::new()
        } else {
            pointer
        };
        (pointer, e.inner().to_string())
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        out.push('/');
        match segment {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&crate::policy::logic::escape_pointer(key))
            }
            Segment::Unknown => out.push('?'),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl Bundle {
    /// Validate and compile a complete set of bundle files.
    pub fn from_files(files: &BundleFiles) -> Result<Bundle, BundleError> {
        let manifest_bytes = files.get("bundle.json").ok_or_else(|| {
            BundleError::file("bundle.json", "missing: every bundle needs a bundle.json")
        })?;
        let (manifest, _): (BundleManifest, _) = parse_json("bundle.json", manifest_bytes)?;
        if manifest.name.is_empty() {
            return Err(BundleError {
                pointer: Some("/name".into()),
                ..BundleError::file("bundle.json", "name must not be empty")
            });
        }

        let mut policies = Vec::new();
        let mut policy_files: BTreeMap<String, String> = BTreeMap::new();
        for (file, bytes) in files.range("policies/".to_owned()..) {
            if !file.starts_with("policies/") {
                break;
            }
            let (document, _): (PolicyDocument, _) = parse_json(file, bytes)?;
            if let Some(first) = policy_files.get(&document.id) {
                return Err(BundleError {
                    policy: Some(document.id.clone()),
                    pointer: Some("/id".into()),
                    ..BundleError::file(
                        file.as_str(),
                        format!("duplicate policy id (also in {first})"),
                    )
                });
            }
            let id = document.id.clone();
            let policy = Policy::compile(document).map_err(|e| BundleError {
                file: file.clone(),
                policy: Some(e.policy),
                pointer: Some(e.pointer),
                message: e.message,
            })?;
            policy_files.insert(id, file.clone());
            policies.push(policy);
        }

        let mut tests = Vec::new();
        for (file, bytes) in files.range("tests/".to_owned()..) {
            if !file.starts_with("tests/") {
                break;
            }
            let (cases, _): (Vec<PolicyTest>, _) = parse_json(file, bytes)?;
            for (i, case) in cases.iter().enumerate() {
                if let Some(Some(id)) = &case.expect.policy_id {
                    if !policy_files.contains_key(id) {
                        return Err(BundleError {
                            pointer: Some(format!("/{i}/expect/policyId")),
                            ..BundleError::file(
                                file.as_str(),
                                format!("test \"{}\" expects unknown policy \"{id}\"", case.name),
                            )
                        });
                    }
                }
            }
            tests.push((file.clone(), cases));
        }

        Ok(Bundle {
            name: Arc::from(manifest.name.as_str()),
            revision: Arc::from(manifest.revision.as_str()),
            policies: PolicySet::new(policies, manifest.default_decision),
            policy_files,
            tests,
            digest: digest(files),
            signer: None,
            manifest,
        })
    }

    /// As [`Bundle::from_files`], after checking the signature when trusted
    /// keys are configured: a tampered or unsigned bundle is refused whole.
    pub fn from_trusted_files(
        files: &BundleFiles,
        trusted: Option<&signing::TrustedKeys>,
    ) -> Result<Bundle, BundleError> {
        let signer = trusted
            .map(|keys| signing::verify_bundle(files, keys))
            .transpose()?;
        let mut bundle = Bundle::from_files(files)?;
        bundle.signer = signer;
        Ok(bundle)
    }

    /// Run the bundle's own tests; one message per failure.
    pub fn run_tests(&self) -> (usize, Vec<String>) {
        let mut total = 0;
        let mut failures = Vec::new();
        for (file, cases) in &self.tests {
            for case in cases {
                total += 1;
                let outcome = self.policies.decide(&case.input, Verdict::Deny);
                let got_policy = outcome
                    .deciding
                    .map(|i| self.policies.get(i).id.to_string());
                let policy_ok = match &case.expect.policy_id {
                    None => true,
                    Some(expected) => expected == &got_policy,
                };
                if outcome.verdict == case.expect.decision && policy_ok {
                    continue;
                }
                let describe = |decision: Verdict, policy: &Option<String>| match policy {
                    Some(p) => format!("{} by {p}", decision.as_str()),
                    None => format!("{} by default", decision.as_str()),
                };
                let expected_policy = case.expect.policy_id.clone().flatten();
                let expected = match &case.expect.policy_id {
                    Some(p) => describe(case.expect.decision, p),
                    None => case.expect.decision.as_str().to_owned(),
                };
                failures.push(format!(
                    "FAIL {file}: test \"{}\": policy {}: expected {expected}, got {}",
                    case.name,
                    expected_policy
                        .or_else(|| got_policy.clone())
                        .unwrap_or_else(|| "(default)".into()),
                    describe(outcome.verdict, &got_policy),
                ));
            }
        }
        (total, failures)
    }
}

/// SHA-256 over file names and contents, in name order.
pub fn digest(files: &BundleFiles) -> String {
    let mut hasher = Sha256::new();
    for (name, bytes) in files {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    hex::encode(hasher.finalize())
}
