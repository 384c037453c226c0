//! TLS termination: real clients (curl, openssl s_client) trusting a CA made in the
//! test; ALPN, SNI, protocol versions, and `porter check` on bad certificates.

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

/// A porter with `[server] tls` set to a certificate for localhost from a new CA.
pub(crate) async fn https_porter(
    backend: std::net::SocketAddr,
    config: impl Into<Config>,
) -> (Porter, tempfile::TempDir) {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(pki_dir.path(), "ca");
    let config = config
        .into()
        .set("server.idle_timeout", "5s")
        .tls(&pki.leaf("localhost", &["localhost"]));
    (Porter::start(backend, config).await, pki_dir)
}

pub(crate) fn https_url(p: &Porter, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", p.addr.port())
}

pub(crate) fn resolve(p: &Porter, host: &str) -> String {
    format!("{host}:{}:127.0.0.1", p.addr.port())
}

#[tokio::test]
async fn https_upload_negotiates_h2_by_alpn_and_offloads_the_file() {
    let backend = Backend::ok().await;
    let (porter, pki) = https_porter(
        backend.addr,
        Upload::multipart("/upload").hashes(&["sha256"]),
    )
    .await;
    let ca = pki.path().join("ca.pem");
    let file = pki.path().join("data.bin");
    let body = data(3 << 20, 7);
    std::fs::write(&file, &body).expect("write");
    let form = format!("file=@{}", file.display());
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (code, out) = curl(&[
            flag,
            "--cacert",
            ca.to_str().expect("path"),
            "--resolve",
            &resolve(&porter, "localhost"),
            "-F",
            &form,
            "-w",
            "\n%{http_version}\n%{http_code}",
            &https_url(&porter, "localhost", "/upload"),
        ])
        .await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with(&format!("\n{version}")),
            "{flag} negotiated: {text}"
        );
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let form = parse_form(r);
        assert_eq!(one(&form, "file.sha256"), sha256_hex(&body));
        let path = one(&form, "file.path");
        assert_eq!(std::fs::read(path).expect("stored file"), body);
        assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    }
    porter.stop().await;
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_asked() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "ca");
    let names = vec![
        sni("a.test", pki.leaf("a", &["a.test"])),
        sni("*.b.test", pki.leaf("b", &["*.b.test"])),
    ];
    let config = Config::new()
        .set("server.tls_sni", names)
        .tls(&pki.leaf("default", &["localhost"]));
    let porter = Porter::start(backend.addr, config).await;
    let ca = pki.ca_path("ca");
    // curl checks the served certificate against the name: the wrong one fails (60).
    for host in ["localhost", "a.test", "x.b.test"] {
        let (code, out) = curl(&[
            "--cacert",
            ca.to_str().expect("path"),
            "--resolve",
            &resolve(&porter, host),
            &https_url(&porter, host, "/"),
        ])
        .await;
        assert_eq!(code, 200, "{host}: {}", String::from_utf8_lossy(&out));
    }
    // An unknown name gets the default certificate, which does not cover it.
    let (code, _) = curl(&[
        "--cacert",
        ca.to_str().expect("path"),
        "--resolve",
        &resolve(&porter, "other.test"),
        &https_url(&porter, "other.test", "/"),
    ])
    .await;
    assert_eq!(
        code, 0,
        "curl refuses the default certificate for other.test"
    );
    porter.stop().await;
}

async fn s_client(p: &Porter, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", p.addr.port()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("s_client finishes")
        .expect("openssl runs")
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let backend = Backend::ok().await;
    let (porter, _pki) = https_porter(backend.addr, Config::new()).await;
    for (flag, ok) in [("-tls1_3", true), ("-tls1_2", true), ("-tls1_1", false)] {
        // SECLEVEL=0 lets this openssl offer TLS 1.1 at all: refusing it is porter's job.
        let out = s_client(&porter, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        let agreed = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
        assert_eq!(agreed, ok, "{flag}: {text}");
    }
    porter.stop().await;
}

#[tokio::test]
async fn alpn_offers_only_http1_when_http2_is_off() {
    let backend = Backend::ok().await;
    let (porter, _pki) = https_porter(backend.addr, Config::new().set("server.http2", false)).await;
    let out = s_client(&porter, &["-alpn", "h2,http/1.1"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    let out = s_client(&porter, &["-alpn", "h2"]).await;
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ALPN protocol: h2"),
        "h2 must not be chosen"
    );
    porter.stop().await;
}

/// One `[[server.tls_sni]]` entry: `name` served with the certificate and key `leaf`.
fn sni(name: &str, (cert, key): (PathBuf, PathBuf)) -> toml::Value {
    toml::Value::Table(toml::Table::from_iter([
        ("name".to_string(), name.into()),
        ("cert".to_string(), cert.display().to_string().into()),
        ("key".to_string(), key.display().to_string().into()),
    ]))
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

#[test]
fn check_accepts_rsa_ec_and_pkcs8_keys_and_names_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(d, "ca");
    let (crt, pkcs8) = pki.leaf("good", &["localhost"]);
    let (_, other_key) = pki.leaf("other", &["localhost"]);
    let p = |f: &str| d.join(f).display().to_string();
    // RSA (PKCS#1) and EC (SEC1) keys as openssl writes them, with self-signed certs.
    openssl(&["genrsa", "-traditional", "-out", &p("rsa.key"), "2048"]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("rsa.key"),
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-out",
        &p("rsa.crt"),
    ]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p("ec.key"),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("ec.key"),
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-out",
        &p("ec.crt"),
    ]);
    std::fs::write(d.join("junk.crt"), "not a certificate\n").expect("write");
    // `porter check` on a config with `tls`: its exit code and what it printed on stderr.
    let check = |tls: Config| {
        let path = d.join("porter.toml");
        let config = tls
            .set("backend.url", "http://127.0.0.1:9")
            .set("storage.root", "r")
            .set("storage.temp", "t");
        std::fs::write(&path, config.text()).expect("write config");
        let checked = porter_check(&path, false);
        (checked.code, checked.stderr)
    };
    for pair in [
        (crt.clone(), pkcs8.clone()),
        (d.join("rsa.crt"), d.join("rsa.key")),
        (d.join("ec.crt"), d.join("ec.key")),
    ] {
        let (code, err) = check(Config::new().tls(&pair));
        assert_eq!(code, Some(0), "{}: {err}", pair.1.display());
    }
    let (code, err) = check(Config::new().tls(&(crt.clone(), other_key)));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("server.tls: the key in") && err.contains("does not belong"),
        "{err}"
    );
    let missing_key = sni("a.test", (crt, "missing.key".into()));
    let (code, err) = check(
        Config::new()
            .tls(&(d.join("junk.crt"), pkcs8))
            .set("server.tls_sni", vec![missing_key]),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("server.tls: ") && err.contains("holds no PEM certificate"),
        "{err}"
    );
    assert!(
        err.contains("server.tls_sni[0]: cannot read a private key"),
        "{err}"
    );
}
