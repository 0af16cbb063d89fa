//! RemoteSigners as a watch last reported them, so that most admissions make no API call: the
//! webhook's one GET per pod was half of what it added to a pod's creation.
//!
//! Only what the cache can safely say without asking is taken from it: a RemoteSigner that exists
//! and is Ready, while the watch is connected and has listed everything since it last (re)started.
//! A RemoteSigner missing from it or not Ready there is read with a GET, since it may have been
//! created or turned Ready a moment ago; so is everything while the watch is down. The cost of a
//! stale entry is bounded: a RemoteSigner that stopped being Ready since the watch's last event may
//! still get a pod, whose signer signs only with a key the operator has cleared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt as _;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};

use crate::api::RemoteSigner;
use crate::controller::status;
use crate::metrics::{Metrics, SourceLabels};

#[derive(Clone)]
pub struct SignerCache {
    store: reflector::Store<RemoteSigner>,
    /// True from a completed list until the watch fails.
    synced: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl SignerCache {
    /// Starts the watch (over `namespace`, or every namespace) in the background.
    pub fn start(client: &Client, namespace: Option<&str>, metrics: Arc<Metrics>) -> SignerCache {
        let api: Api<RemoteSigner> = match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        let events = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
        tokio::spawn(events.for_each(move |event| {
            match event {
                Ok(watcher::Event::InitDone) => flag.store(true, Ordering::SeqCst),
                Ok(watcher::Event::Init) => flag.store(false, Ordering::SeqCst),
                Ok(_) => {}
                Err(error) => {
                    flag.store(false, Ordering::SeqCst);
                    tracing::debug!(%error, "RemoteSigner watch interrupted; admissions read with a GET meanwhile");
                }
            }
            futures::future::ready(())
        }));
        SignerCache { store, synced, metrics }
    }

    /// RemoteSigner `namespace/name`: from the cache when it is there and Ready, else read.
    pub async fn get(&self, client: &Client, namespace: &str, name: &str) -> Result<Option<RemoteSigner>, kube::Error> {
        let lookups = |source| self.metrics.admission_lookups.get_or_create(&SourceLabels { source }).inc();
        if self.synced.load(Ordering::SeqCst) {
            let cached = self.store.get(&ObjectRef::new(name).within(namespace));
            if let Some(rs) = cached.filter(|rs| is_ready(rs)) {
                lookups("cache");
                return Ok(Some(RemoteSigner::clone(&rs)));
            }
        }
        lookups("get");
        Api::<RemoteSigner>::namespaced(client.clone(), namespace).get_opt(name).await
    }
}

fn is_ready(rs: &RemoteSigner) -> bool {
    let ready = rs.status.as_ref().and_then(|s| s.condition(status::READY));
    ready.is_some_and(|c| c.status == "True")
}
