// Package api is Sesame's SES-compatible HTTP API: applications that send
// with an AWS SDK (SESv2Client, boto3's sesv2, the AWS CLI) send through
// Sesame by changing only the endpoint URL and the keys.
//
// It speaks SES v2's REST-JSON protocol: the paths of the published SES v2
// model (operations.go lists them all), JSON bodies, and errors with the
// x-amzn-ErrorType header and a {"message": …} body, which the SDKs raise
// as their typed exceptions. Every request is authenticated with AWS
// Signature Version 4 (sigv4.go) against the access key of a Sesame
// credential (package account seals the secrets); failures count in the
// submission service's failed-login guard, so a network guessing keys is
// slowed and then blocked as one guessing SMTP passwords is.
//
// The API is a door, not a pipeline: SendEmail builds the message
// (sendemail.go) and hands it to the same submission path as SMTP
// (smtpd.Server.Submit: sender authorization, sandbox, quotas, paused
// credentials, DKIM signing, the durable queue), then translates its
// refusals into SES's errors (errors.go). SendBulkEmail (bulk.go) does so
// per entry; templates (templates.go) belong to the credential that made
// them and render SES's {{variables}}. The identity operations
// (identities.go) and the suppression operations (suppression.go) work on
// Sesame's server-wide domains, addresses and suppression list, limited to
// what the calling credential may use or is stopped by. Operations of the
// model that are not implemented yet answer BadRequestException naming the
// operation.
//
// SES v1's sending actions (the Query API: a form POST to "/", XML
// answers; query.go) are translated into the v2 requests, so both
// versions take the same path.
package api
