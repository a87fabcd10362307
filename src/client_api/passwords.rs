//! Password hashing (argon2id, PHC strings) on a few threads of its own.
//!
//! One hash takes about 19 MiB and tens of milliseconds of CPU. Run on the
//! async workers it stalls every request queued behind it, and every thread
//! that ever hashed keeps its own 19 MiB in the allocator's per-thread
//! arena. Here a fixed set of threads does the hashing, at most that many
//! hashes' memory exists at once, and a bounded queue refuses work beyond
//! what they can take. Each hash's memory is given back when it is done
//! (`lmx serve` has the allocator map large blocks on their own, see
//! `main.rs`), so an idle server does not carry it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::wire::Failure;

/// Requests waiting for a hashing thread before new ones are refused.
const QUEUE: usize = 64;
/// Largest memory cost accepted from a stored hash, in KiB (ours use the
/// default, 19 MiB).
const MAX_M_COST: u32 = 256 * 1024;

enum Task {
    Hash(String),
    Verify { phc: String, password: String },
}

/// What a task gives back: a PHC string, or whether a password matched.
enum Done {
    Hashed(String),
    Verified(bool),
}

type Job = (Task, oneshot::Sender<Result<Done, String>>);

pub struct Passwords {
    queue: SyncSender<Job>,
}

impl Passwords {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> Arc<Passwords> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("lmx-passwords-{i}"))
                .spawn(move || worker(&rx))
                .expect("a thread can be started");
        }
        Arc::new(Passwords { queue: tx })
    }

    async fn run(&self, task: Task) -> Result<Done, Failure> {
        let (tx, rx) = oneshot::channel();
        match self.queue.try_send((task, tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Failure::limit_exceeded("Too many password checks at once", 1_000));
            }
            Err(TrySendError::Disconnected(_)) => return Err(Failure::stopped("password hashing")),
        }
        let done = rx.await.map_err(|_| Failure::stopped("password hashing"))?;
        done.map_err(|e| Failure::failed(format!("password hashing: {e}")))
    }

    /// A new PHC string for `password`, with a random salt.
    pub async fn hash(&self, password: &str) -> Result<String, Failure> {
        match self.run(Task::Hash(password.to_owned())).await? {
            Done::Hashed(phc) => Ok(phc),
            Done::Verified(_) => Err(Failure::failed("password hashing answered the wrong question")),
        }
    }

    /// Whether `password` matches the stored PHC string; `false` for an
    /// empty or unreadable one.
    pub async fn verify(&self, phc: &str, password: &str) -> Result<bool, Failure> {
        if phc.is_empty() {
            return Ok(false);
        }
        match self.run(Task::Verify { phc: phc.to_owned(), password: password.to_owned() }).await? {
            Done::Verified(ok) => Ok(ok),
            Done::Hashed(_) => Err(Failure::failed("password hashing answered the wrong question")),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = rx.lock().map_err(|_| ()).and_then(|r| r.recv().map_err(|_| ()));
        let Ok((task, reply)) = job else { return };
        let result = match task {
            Task::Hash(password) => hash(&password).map(Done::Hashed),
            Task::Verify { phc, password } => Ok(Done::Verified(verify(&phc, &password))),
        };
        let _ = reply.send(result);
    }
}

/// Argon2 over memory of its own, freed when done.
fn derive(params: Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    let mut memory = vec![Block::new(); params.block_count()];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory,
    )
}

fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    derive(params.clone(), password.as_bytes(), &salt, &mut out).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let out = Output::new(&out).map_err(|e| e.to_string())?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        out
    ))
}

fn verify(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    if parsed.algorithm.as_str() != "argon2id" {
        return false;
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    if derive(params, password.as_bytes(), salt, &mut out).is_err() {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[tokio::test]
    async fn hashes_verify_both_ways_with_the_reference_implementation() {
        let p = Passwords::new(1);
        let phc = p.hash("correct horse").await.unwrap();
        assert!(p.verify(&phc, "correct horse").await.unwrap());
        assert!(!p.verify(&phc, "wrong horse").await.unwrap());
        assert!(!p.verify("", "correct horse").await.unwrap());
        assert!(!p.verify("$not$a$hash", "x").await.unwrap());
        // The crate's own verifier accepts our strings, and ours accepts its.
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = argon2::PasswordHasher::hash_password(&Argon2::default(), b"pw", &salt).unwrap().to_string();
        assert!(p.verify(&theirs, "pw").await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_buffered() {
        let p = Passwords::new(1);
        let calls = (0..QUEUE + 8).map(|i| {
            let p = p.clone();
            tokio::spawn(async move { p.hash(&format!("pw{i}")).await })
        });
        let results = futures_util::future::join_all(calls).await;
        let refused = results
            .iter()
            .filter(|r| r.as_ref().unwrap().as_ref().is_err_and(|e| matches!(e, Failure::LimitExceeded { .. })))
            .count();
        assert!(refused > 0, "more jobs than the queue holds are refused");
        assert!(results.iter().any(|r| r.as_ref().unwrap().is_ok()));
    }
}
