//! `lmx bench --postgres URL`: every lmx server of a run keeps its store in
//! a database of its own on that PostgreSQL server, made for the run and
//! dropped when the bench ends.

use std::sync::Mutex;

pub struct BenchDatabases {
    /// A URL or key=value string for a database the bench may connect to
    /// to create others (`postgres` will do).
    base: String,
    created: Mutex<Vec<String>>,
}

/// `base` pointed at database `name` (a later `dbname` wins in both forms).
fn with_database(base: &str, name: &str) -> String {
    if base.starts_with("postgres://") || base.starts_with("postgresql://") {
        let joiner = if base.contains('?') { '&' } else { '?' };
        format!("{base}{joiner}dbname={name}")
    } else {
        format!("{base} dbname={name}")
    }
}

/// Runs statements on the base database, one by one (`DROP DATABASE` may
/// not share a transaction), on a thread of its own (the callers are inside
/// the bench's runtime).
fn on_base(base: &str, sql: Vec<String>) -> anyhow::Result<()> {
    let base = base.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            for statement in sql {
                client.batch_execute(&statement).await?;
            }
            anyhow::Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the database helper thread panicked"))?
}

impl BenchDatabases {
    pub fn new(base: String) -> Self {
        BenchDatabases { base, created: Mutex::new(Vec::new()) }
    }

    /// A fresh database for one server (made again if a run is repeated
    /// under the same name); its connection URL.
    pub fn fresh(&self, name: &str) -> anyhow::Result<String> {
        // Names are made by the bench from letters, digits and `_` only.
        anyhow::ensure!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad database name {name}");
        let mut created = self.created.lock().expect("poisoned");
        if !created.iter().any(|n| n == name) {
            on_base(
                &self.base,
                vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")],
            )?;
            created.push(name.to_owned());
        }
        Ok(with_database(&self.base, name))
    }
}

impl Drop for BenchDatabases {
    fn drop(&mut self) {
        for name in self.created.lock().expect("poisoned").drain(..) {
            if let Err(e) = on_base(&self.base, vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]) {
                eprintln!("could not drop the bench database {name}: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_named_last_in_either_form() {
        assert_eq!(with_database("postgresql://u@h/postgres", "b1"), "postgresql://u@h/postgres?dbname=b1");
        assert_eq!(
            with_database("postgres://u@h/p?sslmode=disable", "b1"),
            "postgres://u@h/p?sslmode=disable&dbname=b1"
        );
        assert_eq!(with_database("host=/tmp user=u", "b1"), "host=/tmp user=u dbname=b1");
    }
}
