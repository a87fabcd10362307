//! What the programs share: accounts registered with the dummy stage.

use anyhow::{Context, Result};
use matrix_sdk::{
    Client,
    ruma::api::client::{account::register, uiaa},
};

/// Registers `name` without logging in (no device made).
pub async fn register(base_url: &str, name: &str, password: &str) -> Result<()> {
    let anon = Client::builder().homeserver_url(base_url).build().await?;
    let mut request = register::v3::Request::new();
    request.username = Some(name.to_owned());
    request.password = Some(password.to_owned());
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    request.inhibit_login = true;
    anon.matrix_auth().register(request).await.with_context(|| format!("registering {name} at {base_url}"))?;
    Ok(())
}

/// A new account, logged in.
#[allow(dead_code)]
pub async fn user(base_url: &str, name: &str, password: &str) -> Result<Client> {
    register(base_url, name, password).await?;
    let client = Client::builder().homeserver_url(base_url).build().await?;
    client.matrix_auth().login_username(name, password).await.with_context(|| format!("logging {name} in"))?;
    Ok(client)
}
