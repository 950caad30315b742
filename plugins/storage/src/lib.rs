//! `storage`: virtual media. Upload disk and CD images, then present one to the target
//! as a CD-ROM or a USB stick.
//!
//! API (`/storage/v1`):
//! - `GET /images`: `{"folder", "images": [{"name","size","mtime"}]}` of the images folder;
//! - `POST /images/NAME`: the body, streamed to disk (64 KiB of memory whatever the
//!   size); `201`, or `409` if NAME exists; a cut-off upload leaves nothing;
//! - `DELETE /images/NAME`: `409` while it is mounted;
//! - `POST /mount` with `{"file":NAME,"cdrom":bool,"readonly":bool}` (defaults: a
//!   read-only CD-ROM); `409` when something is mounted, `404` for a missing image;
//! - `POST /unmount`; `GET /mounted` → `{"file","cdrom","readonly"}` or `null`.
//!
//! Names that are not a plain file in the folder (`..`, `/`, hidden, links out) get
//! `400`. A backend whose device is missing answers `503` with the reason.
//!
//! Backends (`conf/storage/storage.ini`): [`gadget`] (USB mass storage; the default) and
//! [`qemu`]. Both sit behind [`media::Media`].

pub mod gadget;
pub mod images;
pub mod media;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use jsipd_kvm_support::ini::Ini;
use jsipd_kvm_support::qmp::Qmp;
use jsipd_plugin_api::api::{Api, Request, Response, Role};
use jsipd_plugin_api::serde_json::{self, json, Value};
use jsipd_plugin_api::{export_plugin, tracing, Context, Plugin};

use images::{percent_decode, ImageError, Images};
use media::{Media, Presentation};

const KNOWN: &[(&str, &[&str])] = &[
    ("", &["backend", "images"]),
    ("gadget", &["gadget", "function", "lun", "udc_class"]),
    ("qemu", &["qmp", "cdrom"]),
];

/// Reads `conf/storage/storage.ini`: the images folder and the backend.
fn configure(config_dir: &Path) -> Result<(Images, Box<dyn Media>), String> {
    let ini = Ini::read(&config_dir.join("storage.ini"))?;
    ini.only(KNOWN)?;
    let file = ini.path().display().to_string();
    // Relative folders are relative to the install tree (conf/storage/ is two below).
    let prefix = config_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let folder = PathBuf::from(ini.get("", "images").unwrap_or("images"));
    let images = Images::open(prefix.join(folder))?;
    let media: Box<dyn Media> = match ini.get("", "backend").unwrap_or("gadget") {
        "gadget" => Box::new(gadget::Gadget {
            gadget: ini
                .get("gadget", "gadget")
                .unwrap_or("/sys/kernel/config/usb_gadget/jsipd")
                .into(),
            function: ini
                .get("gadget", "function")
                .unwrap_or("mass_storage.usb0")
                .into(),
            lun: ini.parse_or("gadget", "lun", 0, "a LUN number")?,
            udc_class: ini
                .get("gadget", "udc_class")
                .unwrap_or("/sys/class/udc")
                .into(),
        }),
        "qemu" => Box::new(qemu::Qemu::new(
            Qmp::new(ini.get("qemu", "qmp").ok_or_else(|| {
                format!("{file}: backend = qemu needs [qemu] qmp = PATH of QEMU's QMP socket")
            })?),
            ini.get("qemu", "cdrom").unwrap_or("cd0").into(),
        )),
        other => {
            return Err(format!(
                "{file}: backend = {other:?}: expected gadget or qemu"
            ))
        }
    };
    Ok((images, media))
}

#[derive(Debug, Clone, PartialEq)]
struct Mounted {
    file: String,
    how: Presentation,
}

struct Shared {
    images: Images,
    media: Box<dyn Media>,
    /// What is mounted; held across a mount or unmount, so they never interleave.
    mounted: Mutex<Option<Mounted>>,
}

impl Shared {
    fn mounted(&self) -> MutexGuard<'_, Option<Mounted>> {
        self.mounted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Storage(Arc<Shared>);

impl Plugin for Storage {
    fn load(context: &Context) -> Result<Self, String> {
        let (images, media) = configure(context.config_dir())?;
        tracing::info!(
            "images in {}, backend {}",
            images.dir().display(),
            media.describe()
        );
        Ok(Storage(Arc::new(Shared {
            images,
            media,
            mounted: Mutex::new(None),
        })))
    }

    fn api(&self) -> Option<Box<dyn Api>> {
        Some(Box::new(StorageApi(self.0.clone())))
    }
}

struct StorageApi(Arc<Shared>);

fn ok(response: &mut Response<'_>, status: u16, data: Value) {
    response.json(status, &json!({"code": 0, "msg": "OK", "data": data}));
}

fn listed_json(i: &images::Listed) -> Value {
    json!({"name": i.name, "size": i.size, "mtime": i.mtime})
}

fn mounted_json(m: &Option<Mounted>) -> Value {
    match m {
        None => Value::Null,
        Some(m) => json!({"file": m.file, "cdrom": m.how.cdrom, "readonly": m.how.readonly}),
    }
}

impl StorageApi {
    fn image_name(raw: &str, response: &mut Response<'_>) -> Option<String> {
        match percent_decode(raw) {
            Some(n) => Some(n),
            None => {
                response.error(400, "the image name is not valid percent-encoded UTF-8");
                None
            }
        }
    }

    fn upload(&self, name: &str, request: &mut Request<'_>, response: &mut Response<'_>) {
        let expected = request
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if self.0.mounted().as_ref().is_some_and(|m| m.file == name) {
            return response.error(409, &format!("image {name:?} is mounted"));
        }
        match self.0.images.upload(name, request.body(), expected) {
            Ok(size) => {
                tracing::info!("uploaded {name:?}, {size} bytes");
                ok(response, 201, json!({"name": name, "size": size}))
            }
            Err(e) => {
                if let ImageError::Cut(_) | ImageError::Full(_) | ImageError::Io(_) = e {
                    tracing::warn!("upload of {name:?} failed: {}", e.reason());
                }
                response.error(e.status(), e.reason())
            }
        }
    }

    fn delete(&self, name: &str, response: &mut Response<'_>) {
        let mounted = self.0.mounted();
        if mounted.as_ref().is_some_and(|m| m.file == name) {
            return response.error(409, &format!("image {name:?} is mounted; unmount it first"));
        }
        match self.0.images.delete(name) {
            Ok(()) => {
                tracing::info!("deleted {name:?}");
                ok(response, 200, json!({"name": name}))
            }
            Err(e) => response.error(e.status(), e.reason()),
        }
    }

    fn mount(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let body = match request.read_body(4096) {
            Ok(b) => b,
            Err(e) => return response.error(400, &e.to_string()),
        };
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return response.error(400, &format!("the body is not JSON: {e}")),
        };
        let Some(file) = v.get("file").and_then(Value::as_str) else {
            return response.error(400, "mount needs {\"file\":NAME}");
        };
        let flag = |key: &str, default: bool| match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!("{key} must be true or false, not {other}")),
        };
        let how = match (flag("cdrom", true), flag("readonly", true)) {
            (Ok(cdrom), Ok(readonly)) => Presentation {
                cdrom,
                readonly: readonly || cdrom,
            },
            (Err(e), _) | (_, Err(e)) => return response.error(400, &e),
        };
        let path = match self.0.images.existing(file) {
            Ok(p) => p,
            Err(e) => return response.error(e.status(), e.reason()),
        };
        let mut mounted = self.0.mounted();
        if let Some(m) = mounted.as_ref() {
            return response.error(409, &format!("{:?} is mounted; unmount it first", m.file));
        }
        match self.0.media.mount(&path, how) {
            Ok(()) => {
                tracing::info!(
                    "mounted {file:?} (cdrom {}, readonly {})",
                    how.cdrom,
                    how.readonly
                );
                *mounted = Some(Mounted {
                    file: file.into(),
                    how,
                });
                ok(response, 200, mounted_json(&mounted))
            }
            Err(e) => response.error(e.status(), e.reason()),
        }
    }

    fn unmount(&self, response: &mut Response<'_>) {
        let mut mounted = self.0.mounted();
        let Some(m) = mounted.clone() else {
            return response.error(409, "nothing is mounted");
        };
        match self.0.media.unmount(m.how) {
            Ok(()) => {
                tracing::info!("unmounted {:?}", m.file);
                *mounted = None;
                ok(response, 200, Value::Null)
            }
            Err(e) => response.error(e.status(), e.reason()),
        }
    }
}

impl Api for StorageApi {
    /// Listing and mounting media is an operator's; what changes the stored images
    /// (uploads, deletes) is an admin's.
    fn role_needed(&self, method: &str, path: &str) -> Role {
        match (method, path.starts_with("/images/")) {
            ("POST" | "PUT" | "DELETE", true) => Role::Admin,
            _ => Role::Operator,
        }
    }

    fn handle(&self, request: &mut Request<'_>, response: &mut Response<'_>) {
        let method = request.method().to_string();
        let path = request.path().to_string();
        if let Some(raw) = path.strip_prefix("/images/") {
            let Some(name) = Self::image_name(raw, response) else {
                return;
            };
            return match method.as_str() {
                "POST" | "PUT" => self.upload(&name, request, response),
                "DELETE" => self.delete(&name, response),
                "GET" => match self.0.images.describe(&name) {
                    Ok(i) => ok(response, 200, listed_json(&i)),
                    Err(e) => response.error(e.status(), e.reason()),
                },
                _ => response.error(405, "an image takes GET, POST (upload) or DELETE"),
            };
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/images") => match self.0.images.list() {
                Ok(list) => ok(
                    response,
                    200,
                    json!({
                        "folder": self.0.images.dir(),
                        "images": list.iter().map(listed_json).collect::<Vec<_>>(),
                    }),
                ),
                Err(e) => response.error(e.status(), e.reason()),
            },
            ("POST", "/mount") => self.mount(request, response),
            ("POST", "/unmount") => self.unmount(response),
            ("GET", "/mounted") => {
                let mounted = self.0.mounted().clone();
                ok(response, 200, json!({"mounted": mounted_json(&mounted)}))
            }
            (_, "/images" | "/mounted") => response.error(405, &format!("{path} answers GET")),
            (_, "/mount" | "/unmount") => response.error(405, &format!("{path} answers POST")),
            _ => response.error(
                404,
                &format!("no {path} here; try GET /storage/v1/images, POST /storage/v1/images/NAME, POST /storage/v1/mount"),
            ),
        }
    }
}

export_plugin!(Storage);
