'use strict';
// Sends one message through Sesame's SES-compatible API with the AWS SDK
// for JavaScript v3 (@aws-sdk/client-sesv2), configured as docs/api.md
// tells apps to: an endpoint, a region and the credential's key pair. The
// server's certificate is self-signed for sesame.test: it is trusted as
// the only CA, and checked against that name.
//
// Usage: node ses.js ENDPOINT ACCESS_KEY_ID SECRET CA_FILE FROM TO TOKEN
// Prints {"MessageId": ...} when the send succeeds, or {"error": NAME,
// "message": ..., "status": HTTP_STATUS} when the SDK raises an exception
// (exit status 0 either way: the test judges), exit 1 on anything else.

const fs = require('fs');
const https = require('https');
const tls = require('tls');
const { SESv2Client, SendEmailCommand } = require('@aws-sdk/client-sesv2');

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 7) {
    console.error('usage: node ses.js ENDPOINT ACCESS_KEY_ID SECRET CA_FILE FROM TO TOKEN');
    process.exit(2);
  }
  const [endpoint, accessKeyId, secretAccessKey, caFile, from, to, token] = args;
  const httpsAgent = new https.Agent({
    ca: fs.readFileSync(caFile),
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity('sesame.test', cert),
  });
  const client = new SESv2Client({
    region: 'eu-west-1',
    endpoint,
    credentials: { accessKeyId, secretAccessKey },
    maxAttempts: 1, // one request per send: the test counts what arrives
    requestHandler: { httpsAgent, requestTimeout: 60000 },
  });
  try {
    const out = await client.send(new SendEmailCommand({
      FromEmailAddress: from,
      Destination: { ToAddresses: [to] },
      Content: {
        Simple: {
          Subject: { Data: `Sent with client-sesv2 ${token}` },
          Body: { Text: { Data: `Sent by the AWS SDK for JavaScript.\nToken: ${token}\n` } },
        },
      },
    }));
    console.log(JSON.stringify({ MessageId: out.MessageId }));
  } catch (err) {
    if (!err.$metadata) {
      throw err; // not the service's answer: a network or TLS failure
    }
    console.log(JSON.stringify({ error: err.name, message: err.message, status: err.$metadata.httpStatusCode }));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
