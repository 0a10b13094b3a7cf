//! Client certificates for service principals, as PEM and as a password-protected PFX.

use std::path::{Path, PathBuf};

/// A client certificate for a service principal: an RSA key and a self-signed certificate, as
/// PEM and as a password-protected PFX, plus what the mock registers for it.
pub struct ClientCert {
    pub pem: PathBuf,
    pub pfx: PathBuf,
    pub pfx_password: String,
    /// base64url SHA-256 of the certificate's DER: what `x5t#S256` carries.
    pub thumbprint: String,
    /// The public key as PKCS#1 DER, for the mock to verify assertions with.
    pub public_key: Vec<u8>,
    /// The private key as PKCS#8 DER, for tests that sign assertions by hand.
    pub private_key: Vec<u8>,
}

impl ClientCert {
    pub fn generate(dir: &Path, name: &str) -> Self {
        use base64::Engine;
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::EncodePrivateKey;
        let key = <rsa::PrivateKey as rsa::Generate>::generate();
        let pkcs8 = key.to_pkcs8_der().expect("PKCS#8");
        let public_key = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1")
            .as_bytes()
            .to_vec();
        let pkcs8_der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
        let signer =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der, &rcgen::PKCS_RSA_SHA256)
                .expect("rcgen takes the RSA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{name} service principal"),
        );
        let cert = params.self_signed(&signer).expect("certificate");
        let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, cert.der()).as_ref());

        let pem = dir.join(format!("{name}.pem"));
        let key_pem = signer.serialize_pem();
        std::fs::write(&pem, format!("{}{key_pem}", cert.pem())).expect("PEM");

        let pfx_password = "pfx password 123".to_string();
        let mut store = p12_keystore::KeyStore::new();
        let chain = p12_keystore::PrivateKeyChain::new(
            b"1".to_vec(),
            p12_keystore::PrivateKey::from_der(pkcs8.as_bytes()).expect("key"),
            [p12_keystore::Certificate::from_der(cert.der()).expect("cert")],
        );
        store.add_entry("sp", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let pfx = dir.join(format!("{name}.pfx"));
        std::fs::write(&pfx, store.writer(&pfx_password).write().expect("PFX")).expect("write");
        ClientCert {
            pem,
            pfx,
            pfx_password,
            thumbprint,
            public_key,
            private_key: pkcs8.as_bytes().to_vec(),
        }
    }
}
