//! Rebuild when the embedded migrations change (`sqlx::migrate!` reads them at compile time).
//! Nothing else happens here.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
