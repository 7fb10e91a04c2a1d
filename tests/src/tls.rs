//! A throwaway PKI for tests: a CA, a server certificate for `localhost` and 127.0.0.1, and a
//! client certificate, written as PEM files into a directory.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

/// A name of its own for each certificate: OpenSSL takes a certificate whose subject is its
/// issuer's for a self-signed one (rcgen's default gives every certificate the same).
fn named(mut params: CertificateParams, name: &str) -> CertificateParams {
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of these.
    pub other_ca: PathBuf,
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = named(CertificateParams::new(Vec::<String>::new()).unwrap(), "edge test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    /// Makes the files in `dir` (private keys mode 0600).
    pub fn new(dir: &Path) -> Pki {
        Self::for_server(dir, &["localhost", "127.0.0.1"])
    }

    /// As [`Pki::new`], with a server certificate for `names` (host names or addresses).
    pub fn for_server(dir: &Path, names: &[&str]) -> Pki {
        let ca = ca();
        let issue = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let params = named(CertificateParams::new(names.clone()).unwrap(), &names[0]);
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(names.iter().map(|n| n.to_string()).collect());
        let (client_cert, client_key) = issue(vec!["edge-client".into()]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &self::ca().pem()),
        }
    }
}
