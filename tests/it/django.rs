//! Real Django (gunicorn, porter_django's middleware) behind porter: an offloaded upload
//! saved by a Django form is the very file porter stored (moved, same inode), forged
//! metadata sent straight to Django is refused, and `porter_django.sendfile` downloads
//! go out through porter with ranges.

use crate::support::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Gunicorn(Child);

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> String {
    std::env::var("PORTER_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("PORTER_TEST_PYTHON is not set: run the suite with scripts/test, which installs Django and gunicorn")
    })
}

/// gunicorn serving `integrations/django/tests` on a free port, once it accepts.
async fn django(media: &Path, secret: &Path) -> (Gunicorn, u16) {
    let port = free_port();
    let child = Command::new(python())
        .args(["-m", "gunicorn", "--workers", "1", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--chdir")
        .arg(format!(
            "{}/integrations/django",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("tests.wsgi:application")
        .env("DJANGO_SETTINGS_MODULE", "tests.e2e_settings")
        .env("PORTER_E2E_MEDIA", media)
        .env("PORTER_E2E_SECRET_FILE", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gunicorn starts");
    let guard = Gunicorn(child);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (guard, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gunicorn did not start listening on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_form_saves_the_offloaded_file_by_moving_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("media");
    std::fs::create_dir(&media).expect("media dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).expect("secret");
    let (_django, port) = django(&media, &secret).await;
    let porter = Porter::start_with(
        &format!("[backend]\nurl = \"http://127.0.0.1:{port}\"\nsecret_file = {secret:?}\n"),
        &format!(
            "[[upload]]\npath = \"/upload\"\nkind = \"multipart\"\nhashes = [\"sha256\"]\n\
             [[internal]]\nprefix = \"/protected/\"\nroot = {media:?}\n"
        ),
    )
    .await;
    let body = data(2 << 20, 5);
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &body).expect("write");
    let (code, out) = curl(&[
        "-F",
        "title=quarterly",
        "-F",
        &format!("file=@{}", file.display()),
        &porter.url("/upload"),
    ])
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
    let got: serde_json::Value = serde_json::from_slice(&out).expect("json from Django");
    assert_eq!(got["title"], "quarterly");
    assert_eq!(got["fields"], serde_json::json!(["title"]));
    assert_eq!(got["sha256"], sha256_hex(&body));
    assert_eq!(
        got["inode_before"], got["inode_after"],
        "moved, not copied: {got}"
    );
    let saved = got["saved"].as_str().expect("saved path");
    assert!(saved.starts_with(media.to_str().expect("path")));
    assert_eq!(std::fs::read(saved).expect("saved file"), body);
    assert!(
        porter.stored_files().is_empty(),
        "porter's copy was moved away"
    );

    // Forged metadata straight to Django (no signature): refused.
    let (code, _) = curl(&[
        "-F",
        "title=x",
        "-F",
        "file.path=/etc/passwd",
        "-F",
        "file.name=passwd",
        &format!("http://127.0.0.1:{port}/upload"),
    ])
    .await;
    assert_eq!(code, 403);

    // porter_django.sendfile → X-Accel-Redirect → porter serves the range.
    let name = got["name"].as_str().expect("storage name");
    let (code, part) = curl(&["-r", "10-19", &porter.url(&format!("/d/{name}"))]).await;
    assert_eq!(code, 206);
    assert_eq!(part, &body[10..20]);
    porter.stop().await;
}
