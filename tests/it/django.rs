//! Real Django (gunicorn, porter_django's middleware) behind porter: an offloaded upload
//! saved by a Django form is the very file porter stored (moved, same inode), forged
//! metadata sent straight to Django is refused, and `porter_django.sendfile` downloads
//! go out through porter with ranges.

use crate::support::peers::{node_path, python, script, tuspy};
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

/// gunicorn serving `integrations/django/tests` on a free port, once it accepts.
/// `roots` is porter's storage root as Django's `PORTER_ROOTS` (see [`link_roots`]).
async fn django(media: &Path, secret: &Path, roots: &Path) -> (Gunicorn, u16) {
    gunicorn(
        "integrations/django",
        "tests.wsgi:application",
        &[
            ("DJANGO_SETTINGS_MODULE", "tests.e2e_settings".as_ref()),
            ("PORTER_E2E_MEDIA", media.as_os_str()),
            ("PORTER_E2E_SECRET_FILE", secret.as_os_str()),
            ("PORTER_E2E_ROOTS", roots.as_os_str()),
        ],
    )
    .await
}

/// Django starts before porter (porter needs its port), so its `PORTER_ROOTS` names a
/// link that is pointed at porter's storage root once porter runs.
fn link_roots(link: &Path, porter: &Porter) {
    std::os::unix::fs::symlink(porter.root(), link).expect("link PORTER_ROOTS to porter's root");
}

/// gunicorn (one worker) in `dir` (relative to the repository) serving `app`.
async fn gunicorn(dir: &str, app: &str, env: &[(&str, &std::ffi::OsStr)]) -> (Gunicorn, u16) {
    let port = free_port();
    let repo = env!("CARGO_MANIFEST_DIR");
    let child = Command::new(python())
        .args(["-m", "gunicorn", "--workers", "1", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--chdir")
        .arg(format!("{repo}/{dir}"))
        .arg(app)
        .env("PYTHONPATH", format!("{repo}/integrations/django"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gunicorn starts");
    let guard = Gunicorn(child);
    let up = eventually(20, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up.await, "gunicorn did not start listening on {port}");
    (guard, port)
}

/// porter in front of Django on `port`, signing with the key in `secret`.
async fn behind_django(port: u16, secret: &Path, routes: Config) -> Porter {
    let django = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let secret = secret.display().to_string();
    Porter::start(django, routes.set("backend.secret_file", secret)).await
}

/// curl with `args`, which must be answered `status`; the JSON answer.
/// A form with `title` and the file at `file`, posted by curl to `url`: the app's JSON.
async fn post_form(url: &str, title: &str, file: &std::path::Path) -> serde_json::Value {
    let (title, file) = (
        format!("title={title}"),
        format!("file=@{}", file.display()),
    );
    curl_json(&["-F", &title, "-F", &file, url], 200).await
}

async fn curl_json(args: &[&str], status: u16) -> serde_json::Value {
    let (code, out) = curl(args).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, status, "{text}");
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Django behind porter with every route these tests use.
struct Stack {
    dir: tempfile::TempDir,
    media: std::path::PathBuf,
    django_port: u16,
    porter: Porter,
    _django: Gunicorn,
}

async fn stack() -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("media");
    std::fs::create_dir(&media).expect("media dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).expect("secret");
    let roots = dir.path().join("porter-root");
    let (django, port) = django(&media, &secret, &roots).await;
    let multipart = |path: &str| Upload::multipart(path).hashes(&["sha256"]);
    let routes = multipart("/upload")
        .and(multipart("/upload-urlencoded").forward("urlencoded"))
        .upload(multipart("/upload-json").forward("json"))
        .upload(Upload::tus("/files", "/notify").hashes(&["md5"]))
        .upload(
            Upload::chunked("/api/chunked_upload", "/api/chunked_upload_complete/")
                .hashes(&["sha256"]),
        )
        .internal("/protected/", media.display().to_string());
    let porter = behind_django(port, &secret, routes).await;
    link_roots(&roots, &porter);
    Stack {
        dir,
        media,
        django_port: port,
        porter,
        _django: django,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_form_saves_the_offloaded_file_by_moving_it() {
    let Stack {
        dir,
        media,
        django_port: port,
        porter,
        _django: _keep_running,
    } = stack().await;
    let body = data(2 << 20, 5);
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &body).expect("write");
    let got = post_form(&porter.url("/upload"), "quarterly", &file).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tuspy_upload_completes_into_the_tus_notify_view() {
    let s = stack().await;
    let body = data(3 << 20, 9);
    let file = s.dir.path().join("big.bin");
    std::fs::write(&file, &body).expect("write");
    tuspy(&s.porter.url("/files"), &file, 1 << 20, "full").await;
    let saved = s.media.join("tus/big.bin");
    assert_eq!(
        std::fs::read(&saved).expect("the view saved the file"),
        body
    );
    s.porter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_completes_into_the_completion_view() {
    let s = stack().await;
    let body = data(300_000, 4);
    let chunk = |at: usize, end: usize, id: Option<&str>| {
        let file = s.dir.path().join(format!("part{at}"));
        std::fs::write(&file, &body[at..end]).expect("write");
        let mut args = vec![
            "-H".to_string(),
            format!("Content-Range: bytes {at}-{}/{}", end - 1, body.len()),
            "-F".to_string(),
            format!("file=@{};filename=photo.jpg", file.display()),
        ];
        if let Some(id) = id {
            args.extend(["-F".to_string(), format!("upload_id={id}")]);
        }
        args.push(s.porter.url("/api/chunked_upload/"));
        args
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_json(&refs, 200).await
    };
    let first = run(chunk(0, 200_000, None)).await;
    let id = first["upload_id"].as_str().expect("upload_id").to_string();
    run(chunk(200_000, body.len(), Some(&id))).await;
    let fields = format!("upload_id={id}&md5={}", md5_hex(&body));
    let complete = s.porter.url("/api/chunked_upload_complete/");
    let done = curl_json(&["-d", &fields, &complete], 200).await;
    assert_eq!(done["sha256"], sha256_hex(&body));
    let saved = done["saved"].as_str().expect("saved");
    assert_eq!(
        std::fs::read(s.media.join(saved)).expect("saved file"),
        body
    );
    s.porter.stop().await;
}

/// The example app (`integrations/django/example`) behind porter, configured as its
/// own porter.toml says, with storage in a temp dir.
async fn example() -> (tempfile::TempDir, Gunicorn, Porter) {
    let var = tempfile::tempdir().expect("tempdir");
    let v = var.path();
    std::fs::create_dir_all(v.join("media")).expect("media");
    std::fs::write(v.join("secret"), "cd".repeat(32)).expect("secret");
    let repo = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{repo}/integrations/django/example");
    let migrate = Command::new(python())
        .args(["manage.py", "migrate", "-v", "0"])
        .current_dir(&dir)
        .env("EXAMPLE_VAR", v)
        .output()
        .expect("migrate runs");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let roots = v.join("porter-root");
    let (django, port) = gunicorn(
        "integrations/django/example",
        "example.wsgi:application",
        &[
            ("EXAMPLE_VAR", v.as_os_str()),
            ("EXAMPLE_PORTER_ROOTS", roots.as_os_str()),
        ],
    )
    .await;
    // The page's tus-js-client bundle, as scripts/demo copies it.
    std::fs::create_dir_all(v.join("static")).expect("static dir");
    std::fs::copy(
        format!("{}/tus-js-client/dist/tus.min.js", node_path()),
        v.join("static/tus.min.js"),
    )
    .expect("copy tus.min.js");
    let shipped =
        std::fs::read_to_string(format!("{dir}/porter.toml")).expect("example porter.toml");
    let (_, routes) = shipped
        .split_once("# The app's upload view")
        .expect("routes in porter.toml");
    let routes = routes
        .replace("\"var/media\"", &format!("{:?}", v.join("media")))
        .replace("\"static\"", &format!("{:?}", v.join("static")));
    let routes = Config::from_toml(&format!("# {routes}"));
    let porter = behind_django(port, &v.join("secret"), routes).await;
    link_roots(&roots, &porter);
    (var, django, porter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_app_uploads_lists_downloads_and_deletes_by_handle() {
    let (var, _django, porter) = example().await;
    let new_handle = || async {
        let v = curl_json(&["-X", "POST", &porter.url("/handles")], 201).await;
        v["handle"].as_str().expect("handle").to_string()
    };
    let (mine, theirs) = (new_handle().await, new_handle().await);
    let hdr = |h: &str| format!("X-Upload-Handle: {h}");
    let body = data(1 << 20, 3);
    let file = var.path().join("notes.txt");
    std::fs::write(&file, &body).expect("write");
    // An upload of `file` under my handle, which must be answered `status`.
    let upload = |file: &Path, status: u16| {
        let file = format!("file=@{}", file.display());
        let args = [hdr(&mine), file, porter.url("/upload")];
        async move { curl_json(&["-H", &args[0], "-F", &args[1], &args[2]], status).await }
    };
    let up = upload(&file, 200).await;
    assert_eq!(up["accepted"], true);
    assert_eq!(up["file"], "notes.txt");
    let url = up["url"].as_str().expect("url").to_string();
    assert!(porter.stored_files().is_empty(), "moved into MEDIA_ROOT");

    // A format the app does not accept: its 415 answer, and porter deletes the file.
    let exe = var.path().join("tool.exe");
    std::fs::write(&exe, b"MZ").expect("write");
    let refused = upload(&exe, 415).await;
    assert_eq!(
        (refused["accepted"].clone(), refused["error"].clone()),
        (false.into(), "unsupported_type".into())
    );
    assert!(porter.wait_empty().await.is_empty());

    let list = curl_json(&["-H", &hdr(&mine), &porter.url("/upload")], 200).await;
    assert_eq!(list["files"][0]["name"], "notes.txt");
    assert_eq!(list["files"][0]["sha256"], sha256_hex(&body));

    // By uuid, through porter (X-Accel-Redirect), with a range; not for another handle.
    let (code, part) = curl(&["-H", &hdr(&mine), "-r", "100-199", &porter.url(&url)]).await;
    assert_eq!(code, 206);
    assert_eq!(part, &body[100..200]);
    let (code, _) = curl(&["-H", &hdr(&theirs), &porter.url(&url)]).await;
    assert_eq!(code, 404);
    let (code, whole) = curl(&[
        "-b",
        &format!("upload_handle={mine}"),
        &porter.url("/files/notes.txt"),
    ])
    .await;
    assert_eq!((code, whole.len()), (200, body.len()));
    let (code, _) = curl(&[
        "-X",
        "DELETE",
        "-H",
        &hdr(&mine),
        &porter.url("/files/notes.txt"),
    ])
    .await;
    assert_eq!(code, 204);
    let (code, _) = curl(&["-H", &hdr(&mine), &porter.url(&url)]).await;
    assert_eq!(code, 404);
    porter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_uploads_20_mib_on_the_page_and_downloads_it_back() {
    let (var, _django, porter) = example().await;
    let body = data(20 << 20, 8);
    let file = var.path().join("holiday.bin");
    std::fs::write(&file, &body).expect("write");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-upload");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("output dir");
    let run = tokio::process::Command::new("node")
        .env("NODE_PATH", node_path())
        .arg(script("browser_upload.js"))
        .arg(porter.url("/"))
        .arg(&file)
        .arg(&out)
        .kill_on_drop(true)
        .output();
    let done = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser finished in time")
        .expect("node runs");
    assert!(
        done.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim(),
        "100",
        "the progress bar reached 100%"
    );
    let back = std::fs::read(out.join("downloaded.bin")).expect("downloaded file");
    assert!(
        back == body,
        "downloaded bytes differ ({} vs {})",
        back.len(),
        body.len()
    );
    let shot = std::fs::metadata(out.join("page.png")).expect("screenshot");
    assert!(shot.len() > 1000);
    eprintln!("screenshot: {}", out.join("page.png").display());
    porter.stop().await;
}

/// porter uploads into a Garage bucket; Django's default storage is
/// `porter_django.storage.S3Storage` on the same bucket: the form save adopts porter's
/// object by a server-side copy, never by sending the bytes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage_adopts_the_offloaded_object_without_uploading_it_again() {
    let garage = tokio::task::spawn_blocking(crate::s3::Garage::shared)
        .await
        .expect("garage");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).expect("secret");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let location = format!("media{run}");
    let endpoint = garage.endpoints[0].clone();
    let (django, port) = gunicorn(
        "integrations/django",
        "tests.wsgi:application",
        &[
            ("DJANGO_SETTINGS_MODULE", "tests.e2e_settings".as_ref()),
            ("PORTER_E2E_MEDIA", dir.path().as_os_str()),
            ("PORTER_E2E_SECRET_FILE", secret.as_os_str()),
            ("PORTER_E2E_S3_ENDPOINT", endpoint.as_ref()),
            ("PORTER_E2E_S3_BUCKET", garage.bucket.as_ref()),
            ("PORTER_E2E_S3_KEY_ID", garage.key_id.as_ref()),
            ("PORTER_E2E_S3_SECRET", garage.secret.as_ref()),
            ("PORTER_E2E_S3_LOCATION", location.as_ref()),
        ],
    )
    .await;
    let incoming = format!("incoming{run}/");
    let routes = Upload::multipart("/upload-s3").hashes(&["sha256"]);
    let porter = behind_django(
        port,
        &secret,
        garage.storage(&incoming).merge(routes.into()),
    )
    .await;
    let body = data(7 << 20, 9);
    let file = dir.path().join("scan.pdf");
    std::fs::write(&file, &body).expect("write");
    let got = post_form(&porter.url("/upload-s3"), "scan", &file).await;
    assert_eq!(got["sha256"], sha256_hex(&body));
    assert_eq!(got["size"], body.len());
    let name = got["name"].as_str().expect("name");
    let s3 = garage.client();
    let key = format!("{location}/{name}");
    let stored =
        http_body_util::BodyExt::collect(s3.get(&key, None).await.expect("the saved object"))
            .await
            .expect("bytes")
            .to_bytes();
    assert!(stored == body, "the saved object has the upload's bytes");
    assert!(
        s3.list(&incoming).await.expect("list").is_empty(),
        "porter's object was adopted (copied and deleted)"
    );
    drop(django);
    porter.stop().await;
}

/// The attack of issue 18 on the example app: a client field that Django's parser reads
/// as `file.path` (a trailing space, a tab, a different case…) pointing at a file
/// outside storage. The app must store the bytes the client uploaded, and never move,
/// serve or delete the other file — whether it accepts the upload or refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_app_never_adopts_a_file_porter_did_not_write() {
    let (var, _django, porter) = example().await;
    let victim = var.path().join("victim.txt");
    std::fs::write(&victim, b"not the client's").expect("victim");
    let victim_path = victim.to_str().expect("path").to_string();
    let handle = curl_json(&["-X", "POST", &porter.url("/handles")], 201).await;
    let handle = handle["handle"].as_str().expect("handle").to_string();
    let upload = |filename: &'static str, forged: &'static str| {
        let form = Form::new()
            .field(forged, &victim_path)
            .file("file", filename, "text/plain", b"the client's bytes")
            .field(forged, &victim_path);
        request("POST", &porter.url("/upload"))
            .header("x-upload-handle", handle.as_str())
            .form(form)
            .send()
    };
    for forged in crate::trust::FORGED {
        let r = upload("notes.txt", forged).await;
        assert_eq!(r.status, 200, "{forged:?}: {:?}", r.body);
        let url = r.json()["url"].as_str().expect("url").to_string();
        let (code, got) = curl(&[
            "-H",
            &format!("X-Upload-Handle: {handle}"),
            &porter.url(&url),
        ])
        .await;
        assert_eq!(
            (code, got.as_slice()),
            (200, &b"the client's bytes"[..]),
            "{forged:?}"
        );
        // A refused extension: the app deletes what it was given, never the victim.
        let r = upload("tool.exe", forged).await;
        assert_eq!(r.status, 415, "{forged:?}");
        assert_eq!(
            std::fs::read(&victim).expect("the victim is untouched"),
            b"not the client's"
        );
    }
    for forged in [
        "file.path\t",
        "file.path\x0b",
        "file.path\x0c",
        "FILE.path\u{85}",
    ] {
        assert_eq!(upload("notes.txt", forged).await.status, 400, "{forged:?}");
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"not the client's");
    porter.stop().await;
}

/// The same shapes through every forward format into a real Django form view: the
/// form sees the client's fields as sent and porter's file, nothing forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_names_never_reach_django_in_any_forward_format() {
    let s = stack().await;
    let victim = s.dir.path().join("victim.txt");
    std::fs::write(&victim, b"victim").expect("victim");
    let victim_path = victim.to_str().expect("path").to_string();
    for path in ["/upload", "/upload-urlencoded", "/upload-json"] {
        let mut form = Form::new().field("title", "quarterly");
        for forged in crate::trust::FORGED {
            form = form.field(forged, &victim_path);
        }
        let body = data(100_000, 2);
        let form = form.file("file", "r.bin", "application/octet-stream", &body);
        let r = request("POST", &s.porter.url(path)).form(form).send().await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        let got = r.json();
        assert_eq!(got["fields"], serde_json::json!(["title"]), "{path}");
        assert_eq!(
            std::fs::read(got["saved"].as_str().expect("saved")).expect("saved"),
            body
        );
        assert_eq!(std::fs::read(&victim).expect("victim"), b"victim", "{path}");
    }
    // The chunked completion, through django's completion view.
    let body = data(50_000, 6);
    let url = s.porter.url("/api/chunked_upload/");
    let file = ("c.bin", "application/octet-stream");
    let first = chunked::chunk(&url, file, &body, None, None).send().await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let id = chunked::upload_id(&first);
    let fields = format!(
        "file.path+={v}&FILE_PATH={v}&Upload_ID=x&upload_id={id}&md5={}",
        md5_hex(&body),
        v = victim_path.replace('/', "%2F")
    );
    let complete = s.porter.url("/api/chunked_upload_complete/");
    let done = curl_json(&["-d", &fields, &complete], 200).await;
    assert_eq!(done["fields"], serde_json::json!(["md5", "upload_id"]));
    assert_eq!(
        std::fs::read(s.media.join(done["saved"].as_str().expect("saved"))).expect("saved"),
        body
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"victim");
    s.porter.stop().await;
}
