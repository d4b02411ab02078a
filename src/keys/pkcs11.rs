//! Keys that never leave a PKCS#11 token: RFC 7512 URIs, opening a token
//! key for signing, and generating an Ed25519 pair inside a token.
//!
//! The module (`module-path`) is loaded at run time with `dlopen` through
//! the `cryptoki` crate, so nothing new is linked into the binary and any
//! vendor's module works. One module is loaded and initialised once per
//! process, however many keys use it.
//!
//! A URI names the token (`token`, `serial`, `manufacturer`, `model` or
//! `slot-id`), the key (`object` = its label, which is also the signature's
//! `keyId`; optionally `id`), the module and the PIN (`pin-source=file:PATH`,
//! or `pin-value=` for tests):
//! `pkcs11:token=sentinel;object=central?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin`.
//!
//! Cost: a signature is one `C_Sign` call into the module (SoftHSM2: tens of
//! microseconds; a network HSM: a round trip), under a mutex because a
//! PKCS#11 session serves one operation at a time. Nothing that signs does
//! so on a request's hot path.

use super::{check_key_name, KeyError, Signer};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// `CKA_EC_PARAMS` for Ed25519: the PrintableString "edwards25519" (the
/// form PKCS#11 3.0 names and SoftHSM2 2.6 accepts), then the OID
/// 1.3.101.112 that other tokens want.
const ED25519_PARAMS: [&[u8]; 2] = [
    &[
        0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
    ],
    &[0x06, 0x03, 0x2b, 0x65, 0x70],
];

/// Where the PIN comes from.
#[derive(Clone)]
pub enum Pin {
    /// `pin-source=file:PATH` (or a bare path): the file's first line.
    File(PathBuf),
    /// `pin-value=…`: in the URI itself, for tests.
    Value(String),
}

/// A parsed RFC 7512 URI, limited to what choosing a token key needs.
#[derive(Clone, Default)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    /// The key's label (`CKA_LABEL`), also its `keyId`.
    pub object: Option<String>,
    /// The key's `CKA_ID` bytes.
    pub id: Option<Vec<u8>>,
    pub module_path: Option<PathBuf>,
    pub pin: Option<Pin>,
}

fn uri_err(message: impl std::fmt::Display) -> KeyError {
    KeyError::Pkcs11(format!("pkcs11 URI: {message}"))
}

fn decode(attribute: &str, raw: &str) -> Result<Vec<u8>, KeyError> {
    // Percent-encoding must be well formed: "%4" or "%zz" is a typo, not data.
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(uri_err(format!(
                "{attribute}: bad percent-encoding at \"{}\"",
                &raw[i..]
            )));
        }
    }
    Ok(percent_encoding::percent_decode_str(raw).collect())
}

fn decode_text(attribute: &str, raw: &str) -> Result<String, KeyError> {
    String::from_utf8(decode(attribute, raw)?)
        .map_err(|_| uri_err(format!("{attribute}: not UTF-8 once decoded")))
}

impl Pkcs11Uri {
    pub fn parse(text: &str) -> Result<Pkcs11Uri, KeyError> {
        let Some(rest) = text.strip_prefix("pkcs11:") else {
            return Err(uri_err("must start with \"pkcs11:\""));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        let pairs = path
            .split(';')
            .map(|p| (p, false))
            .chain(query.split('&').map(|q| (q, true)));
        for (pair, in_query) in pairs {
            if pair.is_empty() {
                continue;
            }
            let Some((name, raw)) = pair.split_once('=') else {
                return Err(uri_err(format!("\"{pair}\" is not NAME=VALUE")));
            };
            let text = |raw: &str| decode_text(name, raw);
            let duplicate = match (name, in_query) {
                ("token", false) => uri.token.replace(text(raw)?).is_some(),
                ("serial", false) => uri.serial.replace(text(raw)?).is_some(),
                ("manufacturer", false) => uri.manufacturer.replace(text(raw)?).is_some(),
                ("model", false) => uri.model.replace(text(raw)?).is_some(),
                ("slot-id", false) => {
                    let id = text(raw)?
                        .parse::<u64>()
                        .map_err(|_| uri_err(format!("slot-id \"{raw}\" is not a number")))?;
                    uri.slot_id.replace(id).is_some()
                }
                ("object", false) => uri.object.replace(text(raw)?).is_some(),
                ("id", false) => uri.id.replace(decode(name, raw)?).is_some(),
                ("type", false) => {
                    let kind = text(raw)?;
                    if kind != "private" {
                        return Err(uri_err(format!(
                            "type={kind}: a signing key is a private key (type=private)"
                        )));
                    }
                    false
                }
                ("module-path", true) => {
                    uri.module_path.replace(PathBuf::from(text(raw)?)).is_some()
                }
                ("pin-source", true) => {
                    let source = text(raw)?;
                    let path = source.strip_prefix("file:").unwrap_or(&source);
                    // `file:///run/pin` and `file:/run/pin` are both the path /run/pin.
                    let path = path.strip_prefix("//").unwrap_or(path);
                    if !path.starts_with('/') {
                        return Err(uri_err(format!(
                            "pin-source \"{source}\": give an absolute file (file:/PATH)"
                        )));
                    }
                    uri.pin.replace(Pin::File(PathBuf::from(path))).is_some()
                }
                ("pin-value", true) => uri.pin.replace(Pin::Value(text(raw)?)).is_some(),
                ("module-name", true) => {
                    return Err(uri_err(
                        "module-name is not supported: give the module's file as module-path",
                    ))
                }
                (other, _) => {
                    let part = if in_query { "query" } else { "path" };
                    return Err(uri_err(format!(
                        "unknown {part} attribute \"{other}\" (path: token, serial, manufacturer, model, slot-id, object, id, type; query: module-path, pin-source, pin-value)"
                    )));
                }
            };
            if duplicate {
                return Err(uri_err(format!("\"{name}\" is given twice")));
            }
        }
        if uri.module_path.is_none() {
            return Err(uri_err(
                "needs module-path=FILE (the token vendor's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so)",
            ));
        }
        Ok(uri)
    }

    fn module(&self) -> &Path {
        self.module_path.as_deref().unwrap_or(Path::new(""))
    }

    /// How the URI names its token, for messages.
    fn token_name(&self) -> String {
        let mut parts = Vec::new();
        if let Some(label) = &self.token {
            parts.push(format!("\"{label}\""));
        }
        for (name, value) in [
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}=\"{v}\""));
            }
        }
        if let Some(id) = self.slot_id {
            parts.push(format!("slot-id={id}"));
        }
        if parts.is_empty() {
            "the first token".into()
        } else {
            format!("token {}", parts.join(" "))
        }
    }

    fn pin(&self) -> Result<Option<AuthPin>, KeyError> {
        match &self.pin {
            None => Ok(None),
            Some(Pin::Value(value)) => Ok(Some(AuthPin::from(value.clone()))),
            Some(Pin::File(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    KeyError::Pkcs11(format!(
                        "pin-source {}: cannot read the PIN file: {e}",
                        path.display()
                    ))
                })?;
                let pin = text.lines().next().unwrap_or("").to_owned();
                Ok(Some(AuthPin::from(pin)))
            }
        }
    }
}

impl std::fmt::Display for Pkcs11Uri {
    /// The URI again, with a `pin-value` hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~')
            .remove(b'/');
        let enc = |v: &str| percent_encoding::utf8_percent_encode(v, VALUE).to_string();
        let mut path = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("object", &self.object),
        ] {
            if let Some(v) = value {
                path.push(format!("{name}={}", enc(v)));
            }
        }
        if let Some(id) = self.slot_id {
            path.push(format!("slot-id={id}"));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            path.push(format!("id={hex}"));
        }
        let mut query = vec![format!(
            "module-path={}",
            enc(&self.module().to_string_lossy())
        )];
        match &self.pin {
            Some(Pin::File(p)) => {
                query.push(format!("pin-source=file:{}", enc(&p.to_string_lossy())))
            }
            Some(Pin::Value(_)) => query.push("pin-value=REDACTED".into()),
            None => {}
        }
        write!(f, "pkcs11:{}?{}", path.join(";"), query.join("&"))
    }
}

impl std::fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// What went wrong in one PKCS#11 call, in a few words ("CKR_PIN_INCORRECT"-like).
fn ck(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("{function}: {rv:?}"),
        other => other.to_string(),
    }
}

/// The process's loaded modules: `C_Initialize` may run once per module,
/// and every key on that module shares it.
fn module(path: &Path) -> Result<Pkcs11, KeyError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(loaded) = modules.get(path) {
        return Ok(loaded.clone());
    }
    let loaded = Pkcs11::new(path).map_err(|e| {
        KeyError::Pkcs11(format!(
            "cannot load the PKCS#11 module {}: {}",
            path.display(),
            match &e {
                CkError::LibraryLoading(inner) => inner.to_string(),
                other => other.to_string(),
            }
        ))
    })?;
    match loaded.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(KeyError::Pkcs11(format!(
                "the PKCS#11 module {} failed to initialise: {}",
                path.display(),
                ck(&e)
            )))
        }
    }
    modules.insert(path.to_owned(), loaded.clone());
    Ok(loaded)
}

/// The slot holding the token the URI names.
fn find_token(pkcs11: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, KeyError> {
    let slots = pkcs11.get_slots_with_token().map_err(|e| {
        KeyError::Pkcs11(format!(
            "cannot list the tokens of {}: {}",
            uri.module().display(),
            ck(&e)
        ))
    })?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        let matches = uri.token.as_deref().is_none_or(|t| t == info.label())
            && uri
                .serial
                .as_deref()
                .is_none_or(|s| s == info.serial_number())
            && uri
                .manufacturer
                .as_deref()
                .is_none_or(|m| m == info.manufacturer_id())
            && uri.model.as_deref().is_none_or(|m| m == info.model())
            && uri.slot_id.is_none_or(|id| id == slot.id());
        if matches && info.token_initialized() {
            return Ok(slot);
        }
        if info.token_initialized() {
            present.push(format!("\"{}\"", info.label()));
        }
    }
    Err(KeyError::Pkcs11(format!(
        "no {} in the PKCS#11 module {} (initialised tokens: {})",
        uri.token_name(),
        uri.module().display(),
        if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        }
    )))
}

/// Open a session on the URI's token and log in with its PIN.
fn open_session(uri: &Pkcs11Uri, read_write: bool) -> Result<(Pkcs11, Session), KeyError> {
    let pkcs11 = module(uri.module())?;
    let slot = find_token(&pkcs11, uri)?;
    let token = uri.token_name();
    let session = if read_write {
        pkcs11.open_rw_session(slot)
    } else {
        pkcs11.open_ro_session(slot)
    }
    .map_err(|e| KeyError::Pkcs11(format!("{token}: cannot open a session: {}", ck(&e))))?;
    let pin = uri.pin()?;
    let login_required = pkcs11
        .get_token_info(slot)
        .map(|i| i.login_required())
        .unwrap_or(true);
    match (pin, login_required) {
        (None, true) => {
            return Err(KeyError::Pkcs11(format!(
                "{token} needs a PIN: add pin-source=file:PATH to the URI (pin-value= in tests)"
            )))
        }
        (None, false) => {}
        (Some(pin), _) => match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(KeyError::Pkcs11(format!(
                    "{token}: wrong PIN (the token refused the login)"
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(KeyError::Pkcs11(format!(
                    "{token}: the PIN is locked after too many wrong attempts"
                )))
            }
            Err(e) => {
                return Err(KeyError::Pkcs11(format!(
                    "{token}: login failed: {}",
                    ck(&e)
                )))
            }
        },
    }
    Ok((pkcs11, session))
}

fn object_template(class: ObjectClass, uri: &Pkcs11Uri, label: &str) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

/// A private key inside a token, signing with `CKM_EDDSA`.
pub struct TokenKey {
    name: String,
    uri: Pkcs11Uri,
    /// One operation at a time per session; reopened (with a new login and
    /// key handle) when the token was reset or the session lost.
    session: Mutex<(Session, ObjectHandle)>,
    _module: Pkcs11,
}

/// Find the one private key the URI names in an open session.
fn find_key(session: &Session, uri: &Pkcs11Uri, label: &str) -> Result<ObjectHandle, KeyError> {
    let token = uri.token_name();
    let found = session
        .find_objects(&object_template(ObjectClass::PRIVATE_KEY, uri, label))
        .map_err(|e| KeyError::Pkcs11(format!("{token}: cannot search keys: {}", ck(&e))))?;
    match found[..] {
        [key] => Ok(key),
        [] => Err(KeyError::Pkcs11(format!(
            "{token} has no private key with object=\"{label}\"{} (create one with `sentinelnet keygen --pkcs11 URI`)",
            if uri.id.is_some() { " and that id" } else { "" }
        ))),
        _ => Err(KeyError::Pkcs11(format!(
            "{token} has {} private keys with object=\"{label}\": add id=… to the URI to say which",
            found.len()
        ))),
    }
}

/// Errors after which a new session (and login) may succeed.
fn session_lost(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::DeviceError,
            _
        )
    )
}

impl TokenKey {
    /// Load the module, find the token, log in, find the key and make one
    /// test signature, so every failure shows at start.
    pub fn open(uri: &Pkcs11Uri) -> Result<TokenKey, KeyError> {
        let Some(label) = uri.object.clone() else {
            return Err(uri_err(
                "needs object=LABEL: the key's label in the token, which is also its keyId",
            ));
        };
        let (module, session) = open_session(uri, false)?;
        let token = uri.token_name();
        let key = find_key(&session, uri, &label)?;
        let key_type = session
            .get_attributes(key, &[AttributeType::KeyType])
            .ok()
            .and_then(|attributes| {
                attributes.into_iter().find_map(|a| match a {
                    Attribute::KeyType(t) => Some(t),
                    _ => None,
                })
            });
        if key_type.is_some_and(|t| t != KeyType::EC_EDWARDS) {
            return Err(KeyError::Pkcs11(format!(
                "{token}: object \"{label}\" is not an Ed25519 key; SentinelNet signs with Ed25519 (create one with `sentinelnet keygen --pkcs11 URI`)"
            )));
        }
        let signer = TokenKey {
            name: label.clone(),
            uri: uri.clone(),
            session: Mutex::new((session, key)),
            _module: module,
        };
        let probe = signer.sign(b"sentinelnet: key check").map_err(|e| {
            KeyError::Pkcs11(format!("{token}: object \"{label}\" cannot sign: {e}"))
        })?;
        if probe.len() != 64 {
            return Err(KeyError::Pkcs11(format!(
                "{token}: object \"{label}\" made a {}-byte signature, not an Ed25519 one",
                probe.len()
            )));
        }
        Ok(signer)
    }
}

impl Signer for TokenKey {
    fn key_id(&self) -> &str {
        &self.name
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let failed =
            |e: &CkError| KeyError::Pkcs11(format!("signing with \"{}\": {}", self.name, ck(e)));
        match guard.0.sign(&mechanism, guard.1, message) {
            Ok(signature) => Ok(signature),
            Err(e) if session_lost(&e) => {
                // The token was reset or the session dropped: log in again
                // once and retry.
                let (_, session) = open_session(&self.uri, false)?;
                let key = find_key(&session, &self.uri, &self.name)?;
                *guard = (session, key);
                guard
                    .0
                    .sign(&mechanism, guard.1, message)
                    .map_err(|e| failed(&e))
            }
            Err(e) => Err(failed(&e)),
        }
    }
}

/// The raw 32-byte key in a `CKA_EC_POINT`: a DER OCTET STRING (SoftHSM2,
/// most tokens) or the bare bytes.
fn ec_point_key(point: &[u8]) -> Option<&[u8]> {
    match point {
        [0x04, 0x20, key @ ..] if key.len() == 32 => Some(key),
        key if key.len() == 32 => Some(key),
        _ => None,
    }
}

/// Generate an Ed25519 pair inside the token (private key sensitive and
/// not extractable) labelled `name`, and write only `DIR/NAME.pub`.
pub fn keygen(uri: &Pkcs11Uri, dir: &Path, name: &str) -> Result<PathBuf, KeyError> {
    check_key_name(name)?;
    if let Some(object) = uri.object.as_deref().filter(|o| *o != name) {
        return Err(uri_err(format!(
            "object=\"{object}\" and --name {name} differ: the token label is the keyId signatures carry, and verifiers look for NAME.pub, so they must be the same"
        )));
    }
    // Claim NAME.pub before touching the token: a directory that cannot be
    // written must not leave a key in the token that a rerun then refuses.
    let claimed = super::claim_public_key(dir, name)?;
    super::write_public_key(claimed, generate_in_token(uri, name))
}

/// Generate the pair in the token; the raw 32-byte public key.
fn generate_in_token(uri: &Pkcs11Uri, name: &str) -> Result<Vec<u8>, KeyError> {
    let (_module, session) = open_session(uri, true)?;
    let token = uri.token_name();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        // By label alone: two keys of one label would make the URI ambiguous.
        let existing = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(name.as_bytes().to_vec()),
            ])
            .map_err(|e| KeyError::Pkcs11(format!("{token}: cannot search keys: {}", ck(&e))))?;
        if !existing.is_empty() {
            return Err(KeyError::Pkcs11(format!(
                "{token} already holds a key labelled \"{name}\"; refusing to create a second"
            )));
        }
    }
    let id = uri.id.clone().unwrap_or_else(|| {
        let mut id = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
        id.to_vec()
    });
    let label = name.as_bytes().to_vec();
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ];
    let mut first_error = None;
    let mut public = None;
    for params in ED25519_PARAMS {
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
            Attribute::EcParams(params.to_vec()),
        ];
        match session.generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &public_template,
            &private_template,
        ) {
            Ok((made, _private)) => {
                public = Some(made);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(public) = public else {
        return Err(KeyError::Pkcs11(format!(
            "{token}: cannot generate an Ed25519 key pair: {}",
            first_error.as_ref().map(ck).unwrap_or_default()
        )));
    };
    let point = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|e| KeyError::Pkcs11(format!("{token}: cannot read the public key: {}", ck(&e))))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .unwrap_or_default();
    ec_point_key(&point).map(<[u8]>::to_vec).ok_or_else(|| {
        KeyError::Pkcs11(format!(
            "{token}: the new public key is not a 32-byte Ed25519 point ({} bytes)",
            point.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_every_mistake_is_named() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=my%20token;object=central;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
        )
        .expect("parses");
        assert_eq!(uri.token.as_deref(), Some("my token"));
        assert_eq!(uri.object.as_deref(), Some("central"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2][..]));
        // The PIN never shows when the URI is printed.
        let shown = uri.to_string();
        assert!(
            shown.contains("pin-value=REDACTED") && !shown.contains("1234"),
            "{shown}"
        );
        assert!(shown.contains("token=my%20token"), "{shown}");

        let file = Pkcs11Uri::parse(
            "pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:///run/pin",
        )
        .expect("parses");
        assert!(matches!(&file.pin, Some(Pin::File(p)) if p == Path::new("/run/pin")));

        for (text, needle) in [
            ("pkcs11:token=t;object=k", "needs module-path"),
            (
                "pkcs11:token=t;objetc=k?module-path=/m.so",
                "unknown path attribute \"objetc\"",
            ),
            (
                "pkcs11:token=t?module-path=/m.so&pin=1",
                "unknown query attribute \"pin\"",
            ),
            (
                "pkcs11:token=t;token=u?module-path=/m.so",
                "\"token\" is given twice",
            ),
            ("pkcs11:token=%zz?module-path=/m.so", "bad percent-encoding"),
            (
                "pkcs11:token=t;type=public?module-path=/m.so",
                "type=private",
            ),
            ("pkcs11:token?module-path=/m.so", "not NAME=VALUE"),
            (
                "pkcs11:token=t?module-path=/m.so&pin-source=pin.txt",
                "absolute file",
            ),
            ("pkcs11:slot-id=x?module-path=/m.so", "slot-id"),
        ] {
            let error = Pkcs11Uri::parse(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn a_missing_module_is_one_clear_error() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=t;object=k?module-path=/nonexistent/libpkcs11.so&pin-value=1",
        )
        .expect("parses");
        let error = TokenKey::open(&uri)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("cannot load the PKCS#11 module /nonexistent/libpkcs11.so"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn ec_points_in_either_encoding() {
        let raw = [7u8; 32];
        let mut der = vec![0x04, 0x20];
        der.extend_from_slice(&raw);
        assert_eq!(ec_point_key(&der), Some(&raw[..]));
        assert_eq!(ec_point_key(&raw), Some(&raw[..]));
        assert_eq!(ec_point_key(&der[..20]), None);
    }
}
