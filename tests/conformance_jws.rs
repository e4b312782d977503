//! Wycheproof JWS and JWK conformance (`$CONFORMANCE_DIR/wycheproof`, by default
//! `../shared/conformance/wycheproof`; `make conformance` says what to do without it).
//!
//! Every vector runs. Each group's key is compiled as an inline JWKS would be (public
//! key when the group has one, else the `oct` secret), then the vector's compact JWS
//! is checked:
//! - `valid`: the key loads and the signature verifies; the full JWT check must then
//!   fail on the claims (`malformed`: the payloads are bytes such as `foo`, not a JSON
//!   object), never on the signature.
//! - `invalid`: refused, either when the key loads (wrong `use`, short or ROCA RSA
//!   key, bad curve point, ...) or when the token is checked.
//!
//! Six labels contradict other vectors or RFC 7515; they are listed in
//! [`MISLABELLED`] with the outcome asserted instead and why. Any other disagreement
//! fails the test.
//!
//! Every vector also runs on the host path, the one `signature_backend: host` takes
//! in Envoy: RS256/384/512 and ES256/384/512 signatures are encoded for Envoy's
//! `verify_signature` (key as SubjectPublicKeyInfo, ECDSA signature as DER, the
//! protobuf arguments) and handed to `NativeVerifySignature`, a stand-in that reads
//! those bytes back and verifies with ring (and `p521`). Its verdict must equal the
//! module's on every vector.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use api_guard::api::{
    verify_jws, verify_jws_with, verify_jwt, Backend, ClaimsRules, Families, KeyRules, KeySet,
    NativeVerifySignature, Verifier,
};
use serde_json::{json, Value};

/// The vectors' folder: `$CONFORMANCE_DIR/wycheproof`, by default beside the clone.
fn dir() -> String {
    let root = std::env::var("CONFORMANCE_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance").to_string()
    });
    format!("{root}/wycheproof")
}

/// Vectors whose `result` label we deliberately do not follow: (tcId, accepted?, why).
const MISLABELLED: &[(u64, bool, &str)] = &[
    (
        346,
        false,
        "labelled valid, but the key says alg PS256 and the token PS384; RFC 7517 §4.4 \
         binds a key to its alg, and tcIds 338/340 (PS256/PS384 token, PS512 key) are \
         labelled invalid for exactly this",
    ),
    (350, false, "same as 346 (rfc7520WithKeyOps)"),
    (
        367,
        true,
        "labelled invalid, but byte-identical to tcId 357 (labelled valid): a correct \
         RFC 7515 compact JWS (C2SP/wycheproof#236)",
    ),
    (370, true, "same as 367: byte-identical to valid tcId 357"),
    (
        372,
        false,
        "labelled valid, but a `?` inside the header part is not base64url (RFC 7515 §2, \
         §5.2 step 2: no additional characters), and the MAC is over other bytes",
    ),
    (373, false, "same as 372, `?` inside the payload part"),
];

struct Tally {
    vectors: usize,
    /// Vectors whose signature the host path checked.
    on_host: usize,
    valid_accepted: usize,
    invalid_rejected: usize,
    rejected_at_key_load: usize,
    mislabelled: usize,
    wrong: Vec<String>,
}

fn load(name: &str) -> Value {
    let path = format!("{}/{name}", dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Rules under which any Wycheproof payload fails on claims: they are not JSON objects.
fn rules() -> ClaimsRules {
    ClaimsRules {
        issuer: "https://issuer.example/".into(),
        audiences: vec![],
        clock_skew_seconds: 60,
        max_lifetime_seconds: None,
        require_expiration: true,
    }
}

/// The key set a group's vectors are checked with, as a JWKS document.
fn group_jwks(group: &Value) -> Value {
    let key = group
        .get("public")
        .or_else(|| group.get("private"))
        .cloned();
    match key {
        // json_web_key_test.json: the member is already a JWKS.
        Some(k) if k.get("keys").is_some() => k,
        Some(k) => json!({ "keys": [k] }),
        None => panic!("group without key: {}", group["comment"]),
    }
}

fn run(file: &str) -> Tally {
    let doc = load(file);
    static STAND_IN: NativeVerifySignature = NativeVerifySignature;
    let host = Verifier::host(&STAND_IN, Families::ALL);
    let mut t = Tally {
        vectors: 0,
        on_host: 0,
        valid_accepted: 0,
        invalid_rejected: 0,
        rejected_at_key_load: 0,
        mislabelled: 0,
        wrong: Vec::new(),
    };
    let key_rules = KeyRules {
        min_rsa_bits: 2048,
        allow_symmetric: true,
    };
    for group in doc["testGroups"].as_array().unwrap() {
        let keys: Result<KeySet, String> = KeySet::from_jwks_strict(&group_jwks(group), &key_rules);
        for test in group["tests"].as_array().unwrap() {
            t.vectors += 1;
            let id = test["tcId"].as_u64().unwrap();
            let comment = test["comment"].as_str().unwrap_or_default();
            let labelled_valid = test["result"] == "valid";
            let jws = test["jws"].as_str().unwrap_or_default();
            let accepted = match &keys {
                Ok(ks) => verify_jws(jws, ks).is_ok(),
                Err(_) => false,
            };
            if let Ok(ks) = &keys {
                let (on_host, backend) = verify_jws_with(jws, ks, &host);
                if backend == Some(Backend::Host) {
                    t.on_host += 1;
                }
                if on_host.is_ok() != accepted {
                    t.wrong.push(format!(
                        "tcId {id} ({comment}): the host path says {}, the module {}",
                        on_host.is_ok(),
                        accepted
                    ));
                }
            }
            if accepted {
                // Signature fine: the full JWT check must fail on the payload.
                let full = verify_jwt(jws, keys.as_ref().unwrap(), &rules(), 1_700_000_000);
                let reason = full.as_ref().err().map(|e| e.reason());
                if reason != Some("malformed") {
                    t.wrong.push(format!(
                        "tcId {id} ({comment}): full JWT check gave {full:?}, want malformed payload"
                    ));
                }
            }
            let (expected, note) = match MISLABELLED.iter().find(|(m, _, _)| *m == id) {
                Some((_, outcome, why)) => (*outcome, Some(*why)),
                None => (labelled_valid, None),
            };
            if accepted != expected {
                t.wrong.push(format!(
                    "tcId {id} ({comment}): labelled {}, {}",
                    test["result"],
                    if accepted { "accepted" } else { "rejected" }
                ));
                continue;
            }
            match (note, accepted) {
                (Some(why), _) => {
                    t.mislabelled += 1;
                    println!("  tcId {id} ({comment}): label not followed: {why}");
                }
                (None, true) => t.valid_accepted += 1,
                (None, false) => {
                    t.invalid_rejected += 1;
                    if keys.is_err() {
                        t.rejected_at_key_load += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        t.vectors as u64,
        doc["numberOfTests"].as_u64().unwrap(),
        "{file}: vector count"
    );
    t
}

fn report(name: &str, t: &Tally) {
    println!(
        "wycheproof {name}: {} vectors, {} valid accepted, {} invalid rejected ({} at key load), \
         {} mislabelled handled as documented, {} checked on the host path with the same \
         verdict, {} wrong",
        t.vectors,
        t.valid_accepted,
        t.invalid_rejected,
        t.rejected_at_key_load,
        t.mislabelled,
        t.on_host,
        t.wrong.len()
    );
    for w in &t.wrong {
        println!("  WRONG {w}");
    }
}

#[test]
fn wycheproof_json_web_signature_vectors() {
    let t = run("json_web_signature_test.json");
    report("jws", &t);
    assert_eq!(t.vectors, 401);
    assert!(t.wrong.is_empty(), "{:#?}", t.wrong);
    assert_eq!(t.mislabelled, MISLABELLED.len());
    // The RS* and ES* vectors whose key loads and whose token reaches a signature
    // check of such a key.
    assert_eq!(t.on_host, 263);
}

#[test]
fn wycheproof_json_web_key_vectors() {
    let t = run("json_web_key_test.json");
    report("jwk", &t);
    assert!(t.wrong.is_empty(), "{:#?}", t.wrong);
}

#[test]
fn every_key_refusal_in_the_jwk_vectors_has_a_reason() {
    // The JWK vectors whose key set must not load, with the reason we give.
    let doc = load("json_web_key_test.json");
    let key_rules = KeyRules {
        min_rsa_bits: 2048,
        allow_symmetric: true,
    };
    let want: &[(&str, &str)] = &[
        ("jws_mixedSymmetryKeyset", "must not be mixed"),
        ("jws_duplicate_kid", "same `kid`"),
        ("jws_rsa_roca_key", "ROCA"),
        ("keysize_too_small", "RSA modulus is 1024 bits"),
        ("exponentOne", "exponent must be odd, at least 3"),
        ("wrong_algorithm", "does not fit `crv` P-256"),
        ("invalid_algorithm", "\"ES224\" is not a supported"),
        ("invalid_use", "`use` is \"enc\""),
        ("invalid_point", "not on curve P-256"),
        ("wrong_curve", "`alg` ES256 does not fit `crv` P-384"),
        ("wrong_kty", "`alg` ES256 does not fit `kty` RSA"),
        ("invalid_aes_gcm_key", "\"A256GCM\" is not a supported"),
        ("invalid_aes_kw_key", "\"A256KW\" is not a supported"),
    ];
    for (comment, reason) in want {
        let group = doc["testGroups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["comment"] == *comment)
            .unwrap_or_else(|| panic!("no group {comment}"));
        let err = KeySet::from_jwks_strict(&group_jwks(group), &key_rules)
            .err()
            .unwrap_or_default();
        assert!(err.contains(reason), "{comment}: {err:?} lacks {reason:?}");
    }
}
