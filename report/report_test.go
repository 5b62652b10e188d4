package report

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// utc is a time in UTC, as normalize leaves them.
func utc(year int, month time.Month, day, hour, minute, sec int) time.Time {
	return time.Date(year, month, day, hour, minute, sec, 0, time.UTC)
}

// normalize returns a copy of r that reflect.DeepEqual can compare with a
// literal: times in UTC, and no Raw (tested apart).
func normalize(r *Report) *Report {
	c := *r
	if r.DSN != nil {
		d := *r.DSN
		d.ArrivalDate = d.ArrivalDate.UTC()
		d.Recipients = append([]Recipient(nil), d.Recipients...)
		for i := range d.Recipients {
			d.Recipients[i].LastAttempt = d.Recipients[i].LastAttempt.UTC()
		}
		c.DSN = &d
	}
	if r.Feedback != nil {
		f := *r.Feedback
		f.ArrivalDate = f.ArrivalDate.UTC()
		c.Feedback = &f
	}
	c.Original.Raw = nil
	return &c
}

func TestParseSamples(t *testing.T) {
	tests := []struct {
		file string
		want *Report
		// raw lists fields expected in Original.Raw: name → every value.
		raw map[string][]string
	}{{
		file: "postfix-failed-delayed.eml",
		want: &Report{
			Kind: KindDSN,
			DSN: &DSN{
				ReportingMTA: "mail.example.net",
				ArrivalDate:  utc(2025, 3, 4, 10, 14, 58),
				Recipients: []Recipient{{
					FinalRecipient:    "alice@example.net",
					OriginalRecipient: "alice@example.net",
					Action:            "failed",
					Status:            "5.1.1",
					RemoteMTA:         "mx1.example.net",
					Diagnostic:        "550 5.1.1 <alice@example.net>: Recipient address rejected: User unknown in local recipient table",
				}, {
					FinalRecipient:    "bob@example.org",
					OriginalRecipient: "bob@example.org",
					Action:            "delayed",
					Status:            "4.7.1",
					RemoteMTA:         "mx.example.org",
					Diagnostic:        "451 4.7.1 Greylisted, please try again later",
				}},
			},
			Original: Headers{
				MessageID: "0193a1b2c3d4.order-8812@shop.example.com",
				From:      `"Example Shop" <orders@shop.example.com>`,
				To:        "alice@example.net, bob@example.org",
				Subject:   "Your order #8812 has shipped",
				Received: []string{
					"from relay.sesame.example (relay.sesame.example [192.0.2.25]) (using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits)) (No client certificate requested) by mail.example.net (Postfix) with ESMTPS id 4Zq8Rk1Xy2z9vBd; Tue,  4 Mar 2025 10:14:58 +0000 (UTC)",
					"from app1.shop.example.com ([192.0.2.10]) by relay.sesame.example (Sesame) with ESMTPSA id K5QX2M4A3JD7Y0C2 (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256); Tue, 04 Mar 2025 10:14:57 +0000",
				},
			},
		},
		raw: map[string][]string{
			"Message-ID": {"<0193a1b2c3d4.order-8812@shop.example.com>"},
			"Dkim-Signature": {"v=1; a=rsa-sha256; c=relaxed/relaxed; d=shop.example.com; s=sesame1; t=1741083297; " +
				"h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; " +
				"b=Zm9vYmFyIG5vdCBhIHJlYWwgc2lnbmF0dXJlIGp1c3QgdGVzdCBkYXRh"},
			"Content-Type": {"text/plain; charset=utf-8"},
		},
	}, {
		// LF line ends, message/global-delivery-status with raw UTF-8
		// addresses, angle brackets, message/global-headers.
		file: "exchange-utf8-lf.eml",
		want: &Report{
			Kind: KindDSN,
			DSN: &DSN{
				ReportingMTA: "AM9PR01MB7711.eurprd01.prod.exchangelabs.example",
				ArrivalDate:  utc(2025, 3, 4, 12, 39, 58),
				Recipients: []Recipient{{
					FinalRecipient:    "andré@contoso.example",
					OriginalRecipient: "andré@contoso.example",
					Action:            "failed",
					Status:            "5.1.10",
					Diagnostic:        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
				}, {
					FinalRecipient:    "zoë@contoso.example",
					OriginalRecipient: "zoe@contoso.example",
					Action:            "failed",
					Status:            "5.2.2",
					RemoteMTA:         "AM9PR01MB7711.eurprd01.prod.exchangelabs.example",
					Diagnostic:        "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
					LastAttempt:       utc(2025, 3, 4, 12, 40, 2),
				}},
			},
			Original: Headers{
				MessageID: "0193a1b2c3d6.rechnung-5521@shop.example.com",
				From:      "Buchhaltung <rechnung@shop.example.com>",
				To:        "André Faure <andré@contoso.example>, Zoë Martin <zoë@contoso.example>",
				Subject:   "Ihre Rechnung 5521 für März",
				Received: []string{
					"from relay.sesame.example (192.0.2.25) by AM9PR01MB7711.eurprd01.prod.exchangelabs.example (10.167.8.61) with Microsoft SMTP Server (version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384) id 15.20.8489.12; Tue, 4 Mar 2025 12:39:58 +0000",
					"from billing.shop.example.com ([192.0.2.12]) by relay.sesame.example (Sesame) with ESMTPSA id X4MPL30000000000 (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256); Tue, 04 Mar 2025 12:39:57 +0000",
				},
			},
		},
		raw: map[string][]string{"Content-Type": {"application/pdf"}, "Mime-Version": {"1.0"}},
	}, {
		// A first part that is a multipart/related holding a
		// multipart/alternative, a folded Diagnostic-Code, a Remote-MTA
		// with a final dot and a comment, text/rfc822-headers with
		// encoded-words.
		file: "gmail-rfc822-headers.eml",
		want: &Report{
			Kind: KindDSN,
			DSN: &DSN{
				ReportingMTA: "googlemail.com",
				ArrivalDate:  utc(2025, 3, 4, 11, 20, 49),
				Recipients: []Recipient{{
					FinalRecipient: "dave@example.com",
					Action:         "failed",
					Status:         "5.1.1",
					RemoteMTA:      "mx.example.com",
					Diagnostic:     "550-5.1.1 The mailbox you tried to reach does not exist. Check the address 550-5.1.1 for typing mistakes and try again. 550 5.1.1 mx.example.com",
					LastAttempt:    utc(2025, 3, 4, 11, 20, 51),
				}},
			},
			Original: Headers{
				MessageID: "0193a1b2c3d5.welcome@shop.example.com",
				From:      "Example Shop <hello@shop.example.com>",
				To:        "dave@example.com",
				Subject:   "Frühlingsangebote – nur diese Woche",
				Received: []string{
					"from app1.shop.example.com ([192.0.2.10]) by relay.sesame.example (Sesame) with ESMTPSA id M4ILBOX000000000 for <dave@example.com>; Tue, 04 Mar 2025 11:20:47 +0000",
				},
			},
		},
		raw: map[string][]string{
			"From":    {"=?UTF-8?Q?Example_Shop?= <hello@shop.example.com>"},
			"Subject": {"=?UTF-8?Q?Fr=C3=BChlingsangebote_=E2=80=93_nur_diese_Woche?="},
		},
	}, {
		// The caller's lookup key, Sesame's queue id, in the Received
		// field Sesame wrote; Exim puts Action before Final-Recipient.
		file: "exim-queueid.eml",
		want: &Report{
			Kind: KindDSN,
			DSN: &DSN{
				ReportingMTA: "mx.example.org",
				Recipients: []Recipient{{
					FinalRecipient: "carol@example.org",
					Action:         "failed",
					Status:         "5.0.0",
					RemoteMTA:      "mail.example.org",
					Diagnostic:     "550 5.2.1 Mailbox disabled for this recipient",
				}},
			},
			Original: Headers{
				MessageID: "20250304110239.QUEUEIDXXXXXXXX@shop.example.com",
				From:      "Example Shop <news@shop.example.com>",
				To:        "Carol <carol@example.org>",
				Subject:   "Your March newsletter",
				Received: []string{
					"from relay.sesame.example ([192.0.2.25]) by mx.example.org with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384 (Exim 4.96) (envelope-from <b+q7ueueid0000000.k5qx2m4a@bounce.shop.example.com>) id 1tpQ7w-000Abb-1x for carol@example.org; Tue, 04 Mar 2025 11:02:40 +0000",
					"from app2.shop.example.com ([192.0.2.11]) by relay.sesame.example (Sesame) with ESMTPSA id QUEUEIDXXXXXXXX (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256) for <carol@example.org>; Tue, 04 Mar 2025 11:02:39 +0000",
				},
			},
		},
		raw: map[string][]string{"Return-Path": {"<b+q7ueueid0000000.k5qx2m4a@bounce.shop.example.com>"}},
	}, {
		// Field names and values in odd cases, comments everywhere, a
		// quoted Content-Type with capitals.
		file: "yahoo-dsn.eml",
		want: &Report{
			Kind: KindDSN,
			DSN: &DSN{
				ReportingMTA: "sonic312-21.consmr.mail.gq1.yahoo.example",
				ArrivalDate:  utc(2025, 3, 4, 14, 5, 12),
				Recipients: []Recipient{{
					FinalRecipient: "erin@yahoo.example",
					Action:         "failed",
					Status:         "5.0.0",
					RemoteMTA:      "mta1042.mail.gq1.yahoo.example",
					Diagnostic:     "554 delivery error: dd This user doesn't have a yahoo.example account (erin@yahoo.example) [0] - mta1042.mail.gq1.yahoo.example",
					LastAttempt:    utc(2025, 3, 4, 14, 5, 14),
				}},
			},
			Original: Headers{
				MessageID: "0193a1b2c3d8.reset@shop.example.com",
				From:      "Example Shop <no-reply@shop.example.com>",
				To:        "erin@yahoo.example",
				Subject:   "Reset your password",
				Received: []string{
					"from 192.0.2.25 (EHLO relay.sesame.example) by mta1042.mail.gq1.yahoo.example with ESMTPS; Tue, 4 Mar 2025 14:05:12 +0000",
					"from app3.shop.example.com ([192.0.2.13]) by relay.sesame.example (Sesame) with ESMTPSA id Y4HOO00000000000 (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256) for <erin@yahoo.example>; Tue, 04 Mar 2025 14:05:11 +0000",
				},
			},
		},
	}, {
		// A DSN as Sesame's relay writes it: utf-8-addr-xtext addresses,
		// Original-Envelope-Id, an 8-bit returned header.
		file: "sesame-delayed-xtext.eml",
		want: &Report{
			Kind: KindDSN,
			DSN: &DSN{
				ReportingMTA:       "relay2.partner.example",
				OriginalEnvelopeID: "7GFC3CTHMRJQDUDB",
				ArrivalDate:        utc(2025, 3, 4, 4, 0, 0),
				Recipients: []Recipient{{
					FinalRecipient: "jürgen@bücher.example",
					Action:         "delayed",
					Status:         "4.4.2",
					RemoteMTA:      "xn--bcher-kva.example",
					Diagnostic:     "421 4.4.2 Connection timed out",
					LastAttempt:    utc(2025, 3, 5, 7, 58, 31),
				}},
			},
			Original: Headers{
				MessageID: "0193a1b2c3d7.versand@shop.example.com",
				From:      "Example Shop <versand@shop.example.com>",
				To:        "jürgen@bücher.example",
				Subject:   "Versandbestätigung",
				Received: []string{
					"from relay.sesame.example ([192.0.2.25]) by relay2.partner.example (Sesame) with ESMTPSA id 6KQ2Z7W3D4H5J6M7 (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256) for <jürgen@bücher.example>; Tue, 04 Mar 2025 04:00:00 +0000",
					"from app1.shop.example.com ([192.0.2.10]) by relay.sesame.example (Sesame) with ESMTPSA id 7GFC3CTHMRJQDUDB for <jürgen@bücher.example>; Tue, 04 Mar 2025 03:59:59 +0000",
				},
			},
		},
	}, {
		file: "arf-yahoo-abuse.eml",
		want: &Report{
			Kind: KindARF,
			Feedback: &Feedback{
				Type:             "abuse",
				UserAgent:        "Yahoo!-Mail-Feedback/2.0",
				Version:          "0.1",
				OriginalMailFrom: "b+fb1c0mpla1nt0000.k5qx2m4a@bounce.shop.example.com",
				OriginalRcptTo:   []string{"frank@yahoo.example"},
				ArrivalDate:      utc(2025, 3, 4, 15, 41, 20),
				SourceIP:         "192.0.2.25",
				ReportedDomain:   []string{"shop.example.com"},
				ReportingMTA:     "mta1077.mail.gq1.yahoo.example",
			},
			Original: Headers{
				MessageID: "0193a1b2c3d9.spring-sale@shop.example.com",
				From:      "Example Shop <news@shop.example.com>",
				To:        "frank@yahoo.example",
				Subject:   "Spring sale: 20% off everything",
				Received: []string{
					"from 192.0.2.25 (EHLO relay.sesame.example) by mta1077.mail.gq1.yahoo.example with ESMTPS; Tue, 4 Mar 2025 15:41:20 +0000",
					"from app1.shop.example.com ([192.0.2.10]) by relay.sesame.example (Sesame) with ESMTPSA id FB1C0MPLA1NT0000 (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256) for <frank@yahoo.example>; Tue, 04 Mar 2025 15:41:19 +0000",
				},
			},
		},
		raw: map[string][]string{
			"X-Apparently-To":  {"frank@yahoo.example; Tue, 4 Mar 2025 15:41:20 +0000"},
			"List-Unsubscribe": {"<https://shop.example.com/unsubscribe?u=77>"},
		},
	}, {
		// Original-Rcpt-To three times, with and without brackets;
		// Received-Date for Arrival-Date; a Feedback-Type in capitals.
		file: "arf-multi-rcpt.eml",
		want: &Report{
			Kind: KindARF,
			Feedback: &Feedback{
				Type:             "abuse",
				UserAgent:        "AOL SComp",
				Version:          "0.1",
				OriginalMailFrom: "b+d1gest0000000000.k5qx2m4a@bounce.shop.example.com",
				OriginalRcptTo:   []string{"grace@aol.example", "heidi@aol.example", "ivan@aol.example"},
				ArrivalDate:      utc(2025, 3, 5, 8, 58, 2),
				SourceIP:         "2001:db8::25",
				ReportedDomain:   []string{"shop.example.com", "bounce.shop.example.com"},
			},
			Original: Headers{
				MessageID: "0193a1b2c3da.digest@shop.example.com",
				From:      "Example Shop <digest@shop.example.com>",
				To:        "undisclosed-recipients:;",
				Subject:   "Your weekly digest",
				Received: []string{
					"from relay.sesame.example (relay.sesame.example [2001:db8::25]) by mtaout-ma03.mx.aol.example with ESMTPS; Wed, 05 Mar 2025 03:58:02 -0500",
					"from app1.shop.example.com ([192.0.2.10]) by relay.sesame.example (Sesame) with ESMTPSA id D1GEST0000000000 (using TLS1.3 with cipher TLS_AES_128_GCM_SHA256); Wed, 05 Mar 2025 08:58:01 +0000",
				},
			},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := readSample(t, tt.file)
			got, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if g := normalize(got); !reflect.DeepEqual(g, tt.want) {
				t.Errorf("Parse:\n got %s\nwant %s", dump(g), dump(tt.want))
			}
			if got.Original.Raw == nil {
				t.Fatal("Original.Raw is nil")
			}
			if v := got.Original.Raw.Values("Received"); !reflect.DeepEqual(v, got.Original.Received) {
				t.Errorf("Raw Received = %q, want %q", v, got.Original.Received)
			}
			for name, want := range tt.raw {
				if v := got.Original.Raw.Values(name); !reflect.DeepEqual(v, want) {
					t.Errorf("Raw %s = %q, want %q", name, v, want)
				}
			}
			// The same, read from an io.Reader.
			again, err := Read(strings.NewReader(string(raw)))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !reflect.DeepEqual(normalize(again), normalize(got)) || !reflect.DeepEqual(again.Original.Raw, got.Original.Raw) {
				t.Errorf("Read = %s, want what Parse returned", dump(again))
			}
		})
	}
}

// TestQueueIDLookup is what the inbound listener does with a bounce: find
// its own queue id in the Received field it wrote.
func TestQueueIDLookup(t *testing.T) {
	r, err := Parse(readSample(t, "exim-queueid.eml"))
	if err != nil {
		t.Fatal(err)
	}
	found := ""
	for _, rcv := range r.Original.Received {
		if _, after, ok := strings.Cut(rcv, "(Sesame) with ESMTPSA id "); ok {
			found, _, _ = strings.Cut(after, " ")
		}
	}
	if found != "QUEUEIDXXXXXXXX" {
		t.Errorf("queue id in Received = %q, want QUEUEIDXXXXXXXX", found)
	}
}

func dump(r *Report) string {
	var b strings.Builder
	b.WriteString(string(r.Kind))
	if r.DSN != nil {
		b.WriteString(strings.ReplaceAll(
			"\n  DSN "+fmt.Sprintf("%+v", *r.DSN), "}", "}\n  "))
	}
	if r.Feedback != nil {
		b.WriteString("\n  Feedback " + fmt.Sprintf("%+v", *r.Feedback))
	}
	b.WriteString("\n  Original " + fmt.Sprintf("%+v", r.Original))
	return b.String()
}
