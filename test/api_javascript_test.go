package test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// jsSESResult is what test/clients/node/ses.js prints.
type jsSESResult struct {
	MessageID string `json:"MessageId"`
	Error     string `json:"error"`
	Message   string `json:"message"`
	Status    int    `json:"status"`
}

// TestAPIJavaScriptSDK sends through the API with the AWS SDK for
// JavaScript v3 (@aws-sdk/client-sesv2, as installed by
// scripts/install-test-deps.sh): a message from a verified domain is
// delivered DKIM-verified with the MessageId the queue id, and an
// unverified sender raises the SDK's MessageRejected.
func TestAPIJavaScriptSDK(t *testing.T) {
	node := requireTool(t, "node")
	dir := filepath.Join(clientsDir(), "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@aws-sdk", "client-sesv2")); err != nil {
		t.Fatalf("@aws-sdk/client-sesv2 is not installed in %s: %s", dir, installHint)
	}
	inst := newInstance(t)
	inst.unthrottled()
	inst.addDomain(t, "api.test")
	keys := inst.createAPIUser(t, "app")
	inst.start()
	send := func(from, token string) jsSESResult {
		t.Helper()
		out, err := run(t, nil, dir, node, "ses.js", "https://"+inst.apiAddr, keys.AccessKeyID, keys.SecretAccessKey,
			filepath.Join(inst.dataDir, "selfsigned-cert.pem"), from, "ann@example.net", token)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// The result is the last line; the SDK may warn on stderr before it
		// (run combines the two), e.g. about the Node.js version.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var r jsSESResult
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			t.Fatalf("ses.js printed %q: %v", out, err)
		}
		return r
	}

	tok := newToken()
	r := send("app@api.test", tok)
	if r.MessageID == "" || r.Error != "" {
		t.Fatalf("SendEmail with client-sesv2: %+v; want a MessageId", r)
	}
	msg := inst.expectDelivered(t, tok, "api.test")
	if !bytes.Contains(msg.Data, []byte("id "+r.MessageID)) {
		t.Errorf("the delivered message's Received field does not hold the MessageId %s:\n%s", r.MessageID, head(msg.Data))
	}

	r = send("someone@unverified.test", newToken())
	if r.Error != "MessageRejected" || r.Status != 400 || !strings.Contains(r.Message, "not verified") {
		t.Errorf("SendEmail from an unverified sender with client-sesv2: %+v; want MessageRejected (400) saying it is not verified", r)
	}
}
