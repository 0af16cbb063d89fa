//! Which signer images may run with a key. `spec.sidecar.image` runs beside the key (with it, for
//! a Secret key): whoever may name it may as well hold the key. The operator accepts only images
//! under the prefixes it was started with (`--allowed-signer-images`), by default its own signer
//! image's repository.

/// The allowlist, checked by the controller (a RemoteSigner naming another image is not Ready)
/// and by the webhook (its pods are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePolicy {
    /// The image injected when a RemoteSigner names none.
    pub default_image: String,
    /// Allowed prefixes; see [`ImagePolicy::allows`].
    pub allowed: Vec<String>,
}

/// A RemoteSigner asked for a signer image outside the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.sidecar.image {image:?} is not an allowed signer image (allowed: {allowed}); the signer image runs with \
     the key, so sigil-operator runs only images its installer allowed (--allowed-signer-images, chart value \
     allowedSignerImages)"
)]
pub struct ImageNotAllowed {
    image: String,
    allowed: String,
}

impl ImagePolicy {
    /// `allowed` empty: the default image's repository only.
    pub fn new(default_image: &str, allowed: &[String]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        let allowed = if allowed.is_empty() { vec![repository(default_image).to_string()] } else { allowed };
        ImagePolicy { default_image: default_image.to_string(), allowed }
    }

    /// The image a RemoteSigner's pods get, if allowed; otherwise why not.
    pub fn image_for(&self, requested: Option<&str>) -> Result<String, ImageNotAllowed> {
        let image = requested.unwrap_or(&self.default_image);
        if self.allows(image) {
            return Ok(image.to_string());
        }
        Err(ImageNotAllowed { image: image.to_string(), allowed: self.allowed.join(", ") })
    }

    /// An image is allowed when it equals an entry, or continues it past a boundary: an entry
    /// ending in `/`, `:` or `@` allows what follows; otherwise only a tag or digest may follow
    /// (`ghcr.io/x/sigil-signer` allows `…sigil-signer:1.0` and `…@sha256:…`, not
    /// `…sigil-signer-evil`).
    pub fn allows(&self, image: &str) -> bool {
        self.allowed.iter().any(|entry| match image.strip_prefix(entry.as_str()) {
            Some("") => true,
            Some(rest) => entry.ends_with(['/', ':', '@']) || rest.starts_with([':', '@']),
            None => false,
        })
    }
}

/// The image reference without its tag or digest.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].find(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_its_own_repository_only() {
        let policy = ImagePolicy::new("ghcr.io/sigil-dev/sigil-signer:0.1.0", &[]);
        assert_eq!(policy.allowed, ["ghcr.io/sigil-dev/sigil-signer"]);
        assert_eq!(policy.image_for(None).unwrap(), "ghcr.io/sigil-dev/sigil-signer:0.1.0");
        for ok in ["ghcr.io/sigil-dev/sigil-signer:0.2.0", "ghcr.io/sigil-dev/sigil-signer@sha256:ab"] {
            assert!(policy.allows(ok), "{ok}");
        }
        for bad in ["ghcr.io/sigil-dev/sigil-signer-evil:1", "docker.io/attacker/sigil-signer:0.1.0", "busybox"] {
            let refused = policy.image_for(Some(bad)).unwrap_err().to_string();
            assert!(refused.contains("not an allowed signer image") && refused.contains(bad), "{refused}");
        }
        let port = ImagePolicy::new("localhost:5000/sigil-signer", &[]);
        assert_eq!(port.allowed, ["localhost:5000/sigil-signer"], "a registry port is not a tag");
    }

    #[test]
    fn a_prefix_ending_in_a_slash_allows_a_whole_path() {
        let policy = ImagePolicy::new("x", &["registry.example.com/sigil/".into(), " ".into()]);
        assert!(policy.allows("registry.example.com/sigil/sigil-signer:1"));
        assert!(!policy.allows("registry.example.com/sigilx/sigil-signer:1"));
        assert!(!policy.allows("x"), "explicit entries replace the default");
    }
}
