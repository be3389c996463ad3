//! `vigil user add|remove|list`: the web app's users file.

use crate::cli::UserCommand;
use anyhow::{Result, bail};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use web::auth::{self, Role};

pub fn run(users_file: &Path, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add { name, role, cameras, replace } => {
            let role: Role = role.parse()?;
            auth::validate_name(&name)?;
            let password = read_password(&name)?;
            auth::add_user(users_file, &name, &password, role, &cameras, replace)?;
            println!("user {name} ({}) saved in {}", role.as_str(), users_file.display());
        }
        UserCommand::Remove { name } => {
            auth::remove_user(users_file, &name)?;
            println!("user {name} removed from {}", users_file.display());
        }
        UserCommand::List => {
            for u in auth::list_users(users_file)? {
                println!("{:<20} {:<7} {}", u.name, u.role.as_str(), u.cameras.join(","));
            }
        }
    }
    Ok(())
}

/// The password from stdin (one line), or asked for twice on a terminal
/// (echo is not turned off: no extra dependency; type it where nobody watches).
fn read_password(name: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let read = |prompt: &str| -> Result<String> {
        if stdin.is_terminal() {
            eprint!("{prompt}");
            std::io::stderr().flush()?;
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let password = read(&format!("password for {name}: "))?;
    if stdin.is_terminal() && read("again: ")? != password {
        bail!("the passwords differ");
    }
    Ok(password)
}

/// On the first `vigil up` there are no users: creates `admin` with a
/// random password and returns it, to print once. Nothing if users exist.
pub fn first_admin(users_file: &Path) -> Result<Option<String>> {
    if users_file.exists() && !auth::list_users(users_file)?.is_empty() {
        return Ok(None);
    }
    let mut bytes = [0u8; 12];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    // Base32-like, no look-alike characters: easy to type from a terminal.
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let password: String = bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    auth::add_user(users_file, "admin", &password, Role::Admin, &[auth::ALL_CAMERAS.to_string()], true)?;
    Ok(Some(password))
}
