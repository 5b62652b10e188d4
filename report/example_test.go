package report_test

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sesame-mail/sesame/report"
)

// The inbound listener reads a bounce, finds the queue id Sesame wrote in
// the Received field of the returned message, and records each recipient.
func ExampleParse() {
	raw, err := os.ReadFile("testdata/exim-queueid.eml")
	if err != nil {
		panic(err)
	}
	r, err := report.Parse(raw)
	switch {
	case errors.Is(err, report.ErrNotReport):
		fmt.Println("not a report; keep it for a person:", err)
		return
	case err != nil:
		fmt.Println("broken report:", err)
		return
	}
	queueID := ""
	for _, rcv := range r.Original.Received {
		if _, after, ok := strings.Cut(rcv, "(Sesame) with ESMTPSA id "); ok {
			queueID, _, _ = strings.Cut(after, " ")
			break
		}
	}
	fmt.Println(r.Kind, "for queue id", queueID, "message", r.Original.MessageID)
	for _, rc := range r.DSN.Recipients {
		fmt.Println(rc.FinalRecipient, rc.Action, rc.Status, rc.Diagnostic)
	}
	// Output:
	// dsn for queue id QUEUEIDXXXXXXXX message 20250304110239.QUEUEIDXXXXXXXX@shop.example.com
	// carol@example.org failed 5.0.0 550 5.2.1 Mailbox disabled for this recipient
}
