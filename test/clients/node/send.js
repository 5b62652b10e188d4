'use strict';
// Sends one message through Sesame with nodemailer, configured the way the
// nodemailer docs tell apps to use a submission port: secure:false plus
// requireTLS (STARTTLS, refuse to continue without it), or secure:true for
// implicit TLS. The certificate is self-signed, so verification is off.
//
// Usage: node send.js starttls|tls HOST PORT USER PASSWORD FROM TO TOKEN
// Prints nodemailer's info object (with the server's final reply) as JSON.

const nodemailer = require('nodemailer');

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 8) {
    console.error('usage: node send.js starttls|tls HOST PORT USER PASSWORD FROM TO TOKEN');
    process.exit(2);
  }
  const [mode, host, port, user, pass, from, to, token] = args;
  if (mode !== 'starttls' && mode !== 'tls') {
    console.error(`unknown mode ${mode}`);
    process.exit(2);
  }
  const transport = nodemailer.createTransport({
    host,
    port: Number(port),
    secure: mode === 'tls',
    requireTLS: mode === 'starttls',
    name: 'nodemailer.client.test',
    auth: { user, pass },
    tls: { rejectUnauthorized: false },
    connectionTimeout: 30000,
    greetingTimeout: 30000,
    socketTimeout: 30000,
  });
  const info = await transport.sendMail({
    from,
    to,
    subject: token,
    text: `Sent by nodemailer (${mode}).\nToken: ${token}\n`,
  });
  console.log(JSON.stringify(info));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
