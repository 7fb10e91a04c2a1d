//! Waiting rooms' tokens, minted by independent code (tests/python/mint_tokens.py: Python's
//! hmac for Queue-it's format as its SDKs define it, PyJWT with `cryptography` for JWTs),
//! verified by edge: valid ones admit; every single-character change, a wrong key, an expired
//! token, a wrong `aud` or `iss`, `alg: none`, HS256 signed with the RSA public key, an unknown
//! `kid` and an oversized token are each refused with their reason. Then `edge token verify`
//! as an operator runs it: exit codes, the reason, JSON.
use std::{path::Path, process::Command};

use edge::{token::Verifiers, Policy};
use edge_tests::{edge_bin, Run};

const ISSUER: &str = "https://queue.example/api";
const AUDIENCE: &str = "evt-1";
const EVENT: &str = "sale1";

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    kind: String,
    token: String,
    ip: String,
    expect: String,
}

/// Mints the cases into `dir` and writes a config that verifies them.
fn mint(dir: &Path) -> Vec<Case> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mint_tokens.py");
    let out = Command::new("python3")
        .arg(script)
        .args([dir.to_str().unwrap(), &now().to_string(), ISSUER, AUDIENCE, EVENT])
        .output()
        .expect("python3");
    assert!(out.status.success(), "mint_tokens.py: {}", String::from_utf8_lossy(&out.stderr));
    let config = format!(
        "[admission.queueit]\nsecret_file = \"queueit.secret\"\nevents = [\"{EVENT}\"]\n\
         admit_for_s = 900\n\
         [admission.jwt]\njwks_file = \"jwks.json\"\nissuer = \"{ISSUER}\"\n\
         audience = \"{AUDIENCE}\"\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\", \"HS256\"]\n\
         claims = {{ token_use = \"access\" }}\nmax_admit_s = 600\n"
    );
    std::fs::write(dir.join("edge.toml"), config).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap()
}

#[test]
fn tokens_minted_elsewhere_verify_and_every_forgery_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = mint(dir.path());
    let policy = Policy::load(&dir.path().join("edge.toml")).expect("config");
    let verifiers = Verifiers::from_settings(&policy.admission).expect("verifiers");
    let now = now();
    let (mut valid, mut mutated) = (0, 0);
    for case in &cases {
        // An empty kind: detected from the text, as the endpoint and the feed do.
        let kind = (!case.kind.is_empty()).then(|| edge::token::Kind::parse(&case.kind).unwrap());
        let ip = (!case.ip.is_empty()).then(|| case.ip.parse().unwrap());
        let verdict = verifiers.verify(kind, &case.token, ip, now);
        match (case.expect.as_str(), &verdict) {
            ("ok", Ok(accepted)) => {
                valid += 1;
                let ip: std::net::IpAddr = ip.unwrap();
                assert_eq!(accepted.source, ip.to_canonical(), "{}", case.name);
                assert!(accepted.until > now && accepted.until <= now + 900, "{}", case.name);
                assert!(accepted.claim.is_some(), "{}: a replay id", case.name);
            }
            ("refused", Err(_)) => mutated += 1,
            (reason, Err(refusal)) => {
                assert_eq!(refusal.reason, reason, "{}: {refusal}", case.name);
                if let Some(kind) = refusal.kind {
                    assert!(kind.reasons().contains(&reason), "{reason}: not in {kind}'s metric");
                }
                // Nothing a token carries reaches a terminal unescaped.
                assert!(!refusal.to_string().contains('\u{1b}'), "{}: {refusal}", case.name);
                // Refusals never echo the token.
                let echoed = !case.token.is_empty() && refusal.to_string().contains(&case.token);
                assert!(!echoed, "{}", case.name);
            }
            (expect, verdict) => panic!("{}: expected {expect}, got {verdict:?}", case.name),
        }
    }
    assert_eq!(valid, 11, "every valid token verifies");
    assert!(mutated > 1000, "every single-character change is refused ({mutated} cases)");

    // A JWT's admission ends at its exp or after max_admit_s, whichever is sooner.
    let rs = cases.iter().find(|c| c.name == "jwt RS256 valid").unwrap();
    let accepted = verifiers.verify(None, &rs.token, Some(rs.ip.parse().unwrap()), now).unwrap();
    // (Minted a moment before `now`: its exp is now + 300 on the minting script's clock.)
    let ends = now + 300 + 30;
    assert!((ends - 2..=ends).contains(&accepted.until), "exp and leeway, before the cap");
    // The same token's replay id is the same from any address (the daemon counts sources).
    let other = verifiers.verify(None, &rs.token, Some("192.0.2.99".parse().unwrap()), now);
    assert_eq!(other.unwrap().claim, accepted.claim);
}

#[test]
fn edge_token_verify_says_which_check_failed_and_exits_0_only_for_a_token_that_admits() {
    let dir = tempfile::tempdir().unwrap();
    let cases = mint(dir.path());
    let config = dir.path().join("edge.toml");
    let find = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let verify = |token: &str, extra: &[&str]| {
        Run::of(
            Command::new(edge_bin())
                .args(["token", "verify", token, "--config", config.to_str().unwrap()])
                .args(extra),
        )
    };

    // Detected kinds, exit 0, what it admits.
    for name in ["queueit valid", "jwt RS256 valid", "jwt EdDSA valid"] {
        let case = find(name);
        let out = verify(&case.token, &["--ip", &case.ip]).ok(name);
        assert!(out.contains(&format!("admits {}", case.ip)), "{name}: {out}");
    }
    // JSON for scripts.
    let case = find("jwt ES256 valid");
    let out = verify(&case.token, &["--ip", &case.ip, "--json"]).ok("json");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((answer["admit"].as_bool(), answer["kind"].as_str()), (Some(true), Some("jwt")));

    // Refusals: exit 1, the reason on stderr and in the JSON, never the token.
    for name in ["jwt alg none", "jwt HS256 signed with the RSA public key", "queueit expired"] {
        let case = find(name);
        let run = verify(&case.token, &["--ip", &case.ip, "--json"]);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        let answer: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert_eq!(answer["admit"], false);
        assert_eq!(answer["reason"].as_str(), Some(case.expect.as_str()), "{name}");
        assert!(run.stderr.contains(&case.expect), "{name}: {}", run.stderr);
        assert!(!run.stderr.contains(&case.token));
    }
    // A kind forced against the text, and a token without the address it admits.
    let case = find("queueit valid");
    let run = verify(&case.token, &["--kind", "jwt", "--ip", &case.ip]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("jwt token refused: malformed"), "{}", run.stderr);
    let run = verify(&case.token, &[]);
    assert!(run.stderr.contains("no_source"), "{}", run.stderr);

    // Key files that are not secret enough are refused before anything is verified.
    let secret = dir.path().join("queueit.secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let run = verify(&case.token, &["--ip", &case.ip]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("admission.queueit.secret_file") && run.stderr.contains("mode 600"),
        "{}",
        run.stderr
    );
}

/// Key material that would let anyone mint tokens is refused before anything is verified.
#[test]
fn weak_or_private_key_material_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        "[admission.jwt]\njwks_file = \"jwks.json\"\nissuer = \"i\"\naudience = \"a\"\n\
         algorithms = [\"HS256\", \"RS256\"]\n",
    )
    .unwrap();
    let refused = |jwks: &str| {
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let policy = Policy::load(&config).unwrap();
        Verifiers::from_settings(&policy.admission).expect_err(jwks)
    };
    // A 16-byte HMAC key: guessable.
    let short = refused(r#"{"keys": [{"kty": "oct", "kid": "h", "k": "AAAAAAAAAAAAAAAAAAAAAA"}]}"#);
    assert!(short.contains("at least 32"), "{short}");
    // A private key in the set: whoever reads the file can sign.
    let private =
        refused(r#"{"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]}"#);
    assert!(private.contains("private key"), "{private}");
    // A broken document is named by position, never quoted (it may hold a secret).
    let broken = refused(r#""c2VjcmV0LWtleS1tYXRlcmlhbA""#);
    assert!(broken.contains("line 1") && !broken.contains("c2VjcmV0"), "{broken}");
}
