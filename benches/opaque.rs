//! The reference for the OPAQUE login benchmark: the server side of one
//! login in opaque-ke alone (`ServerLogin::start` + `finish`), with the
//! product's suite. `scripts/bench login` compares latchkey's server CPU per
//! login over HTTP with this.

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::domain::opaque::{ServerSetup, Suite};
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration, ClientRegistrationFinishParameters, ServerLogin,
    ServerLoginParameters, ServerRegistration,
};
use rand::rngs::OsRng;

fn server_login(c: &mut Criterion) {
    let setup = ServerSetup::new(&mut OsRng);
    let password = b"benchmark password";
    let start = ClientRegistration::<Suite>::start(&mut OsRng, password).expect("start");
    let response = ServerRegistration::<Suite>::start(&setup, start.message, b"bench").expect("server start").message;
    let record = start
        .state
        .finish(&mut OsRng, password, response, ClientRegistrationFinishParameters::default())
        .expect("finish")
        .message;
    let record = ServerRegistration::<Suite>::finish(record);
    // Client messages computed off the clock (Argon2id is the client's cost).
    let mut prepared = Vec::new();
    for _ in 0..16 {
        let client = ClientLogin::<Suite>::start(&mut OsRng, password).expect("client start");
        let server = ServerLogin::start(
            &mut OsRng,
            &setup,
            Some(record.clone()),
            client.message.clone(),
            b"bench",
            ServerLoginParameters::default(),
        )
        .expect("server start");
        let ke3 = client
            .state
            .finish(&mut OsRng, password, server.message, ClientLoginFinishParameters::default())
            .expect("client finish")
            .message;
        prepared.push((client.message, ke3));
    }
    let mut i = 0;
    c.bench_function("opaque-ke server login (start + finish)", |b| {
        b.iter(|| {
            // Each KE3 belongs to its own server state, so finish fails for a
            // replayed pair; the work done is the same either way.
            let (ke1, ke3) = prepared[i % prepared.len()].clone();
            i += 1;
            let server = ServerLogin::start(
                &mut OsRng,
                &setup,
                Some(record.clone()),
                ke1,
                b"bench",
                ServerLoginParameters::default(),
            )
            .expect("server start");
            let _ = server.state.finish(ke3, ServerLoginParameters::default());
        });
    });
}

criterion_group!(benches, server_login);
criterion_main!(benches);
