package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestInboundExposition(t *testing.T) {
	m := New(nil)
	m.InboundKept("unparsed", true)
	m.InboundKept("unparsed", false)
	m.InboundKept("processed", false)
	m.InboundRefused("client_rate")
	m.InboundRefused("storage_cap")
	m.InboundRefused("storage_cap")
	m.InboundStorage(func(context.Context) (int, int64, error) { return 7, 12345, nil }, 10000, 64<<20)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`sesame_inbound_messages_total{status="unparsed"} 2`,
		`sesame_inbound_messages_total{status="processed"} 1`,
		"sesame_inbound_truncated_total 1",
		`sesame_inbound_refused_total{reason="client_rate"} 1`,
		`sesame_inbound_refused_total{reason="storage_cap"} 2`,
		"sesame_inbound_stored_messages 7",
		"sesame_inbound_stored_bytes 12345",
		"sesame_inbound_stored_messages_limit 10000",
		"sesame_inbound_stored_bytes_limit 6.7108864e+07",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
