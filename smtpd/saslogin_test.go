package smtpd

import (
	"errors"
	"testing"

	"github.com/emersion/go-sasl"
)

// loginStep is one call to Next and what it must return.
type loginStep struct {
	response      []byte
	wantChallenge string
	wantDone      bool
	wantErr       error // matched with errors.Is; nil means no error
}

func TestLoginServer(t *testing.T) {
	errBad := errors.New("bad credentials")
	tests := []struct {
		name      string
		authErr   error
		steps     []loginStep
		wantCalls int
		wantUser  string
		wantPass  string
	}{{
		name: "no initial response",
		steps: []loginStep{
			{response: nil, wantChallenge: "Username:"},
			{response: []byte("SMUSER"), wantChallenge: "Password:"},
			{response: []byte("secret"), wantDone: true},
		},
		wantCalls: 1, wantUser: "SMUSER", wantPass: "secret",
	}, {
		name: "initial response is the username",
		steps: []loginStep{
			{response: []byte("SMUSER"), wantChallenge: "Password:"},
			{response: []byte("secret"), wantDone: true},
		},
		wantCalls: 1, wantUser: "SMUSER", wantPass: "secret",
	}, {
		name: "empty initial response (=) is an empty username",
		steps: []loginStep{
			{response: []byte{}, wantChallenge: "Password:"},
			{response: []byte("secret"), wantDone: true},
		},
		wantCalls: 1, wantUser: "", wantPass: "secret",
	}, {
		name: "empty username and password reach authenticate",
		steps: []loginStep{
			{response: nil, wantChallenge: "Username:"},
			{response: []byte{}, wantChallenge: "Password:"},
			{response: []byte{}, wantDone: true},
		},
		wantCalls: 1, wantUser: "", wantPass: "",
	}, {
		name: "bytes pass through unchanged",
		steps: []loginStep{
			{response: nil, wantChallenge: "Username:"},
			{response: []byte("a b\x00c"), wantChallenge: "Password:"},
			{response: []byte(" pass word \xff"), wantDone: true},
		},
		wantCalls: 1, wantUser: "a b\x00c", wantPass: " pass word \xff",
	}, {
		name:    "authenticate error is returned unchanged",
		authErr: errBad,
		steps: []loginStep{
			{response: []byte("SMUSER"), wantChallenge: "Password:"},
			{response: []byte("wrong"), wantDone: true, wantErr: errBad},
		},
		wantCalls: 1, wantUser: "SMUSER", wantPass: "wrong",
	}, {
		name: "extra response after success",
		steps: []loginStep{
			{response: []byte("SMUSER"), wantChallenge: "Password:"},
			{response: []byte("secret"), wantDone: true},
			{response: []byte("more"), wantErr: sasl.ErrUnexpectedClientResponse},
			{response: nil, wantErr: sasl.ErrUnexpectedClientResponse},
		},
		wantCalls: 1, wantUser: "SMUSER", wantPass: "secret",
	}, {
		name:    "extra response after failure",
		authErr: errBad,
		steps: []loginStep{
			{response: nil, wantChallenge: "Username:"},
			{response: []byte("SMUSER"), wantChallenge: "Password:"},
			{response: []byte("wrong"), wantDone: true, wantErr: errBad},
			{response: []byte("again"), wantErr: sasl.ErrUnexpectedClientResponse},
		},
		wantCalls: 1, wantUser: "SMUSER", wantPass: "wrong",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls int
			var gotUser, gotPass string
			s := newLoginServer(func(username, password string) error {
				calls++
				gotUser, gotPass = username, password
				return tc.authErr
			})
			for i, st := range tc.steps {
				challenge, done, err := s.Next(st.response)
				if string(challenge) != st.wantChallenge || done != st.wantDone || !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
					t.Fatalf("step %d: Next(%q) = %q, %v, %v; want %q, %v, %v",
						i, st.response, challenge, done, err, st.wantChallenge, st.wantDone, st.wantErr)
				}
			}
			if calls != tc.wantCalls || gotUser != tc.wantUser || gotPass != tc.wantPass {
				t.Errorf("authenticate called %d times, last with (%q, %q); want %d, (%q, %q)",
					calls, gotUser, gotPass, tc.wantCalls, tc.wantUser, tc.wantPass)
			}
		})
	}
}

// TestLoginServerWithClient runs go-sasl's LOGIN client against the server the
// way go-smtp drives them, so the challenge text is what real clients expect.
func TestLoginServerWithClient(t *testing.T) {
	var gotUser, gotPass string
	s := newLoginServer(func(username, password string) error {
		gotUser, gotPass = username, password
		return nil
	})
	c := sasl.NewLoginClient("SMUSER", "secret")
	_, ir, err := c.Start()
	if err != nil {
		t.Fatal(err)
	}
	response := ir
	for {
		challenge, done, err := s.Next(response)
		if err != nil {
			t.Fatalf("server: %v", err)
		}
		if done {
			break
		}
		if response, err = c.Next(challenge); err != nil {
			t.Fatalf("client, after challenge %q: %v", challenge, err)
		}
	}
	if gotUser != "SMUSER" || gotPass != "secret" {
		t.Errorf("authenticate got (%q, %q), want (SMUSER, secret)", gotUser, gotPass)
	}
}
