package smtpd

import "github.com/emersion/go-sasl"

// LOGIN mechanism steps.
const (
	loginStart = iota
	loginWantUsername
	loginWantPassword
	loginDone
)

// The challenges are de facto standard text; go-sasl's own LOGIN client, like
// others, expects exactly "Password:" before it sends the password.
const (
	loginUsernameChallenge = "Username:"
	loginPasswordChallenge = "Password:"
)

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login). go-sasl has only the client side.
type loginServer struct {
	authenticate func(username, password string) error
	step         int
	username     string
}

// newLoginServer returns a sasl.Server for the LOGIN mechanism. It asks for
// the username, then the password, and returns authenticate's error
// unchanged. A client may send the username as an initial response
// ("AUTH LOGIN <base64 username>"), which skips the first challenge.
func newLoginServer(authenticate func(username, password string) error) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

// Next implements sasl.Server. go-smtp calls it first with the initial
// response, nil if the client gave none (non-nil but empty for "="), then once
// with each answer to a challenge.
func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case loginStart:
		if response == nil {
			s.step = loginWantUsername
			return []byte(loginUsernameChallenge), false, nil
		}
		s.username = string(response)
		s.step = loginWantPassword
		return []byte(loginPasswordChallenge), false, nil
	case loginWantUsername:
		s.username = string(response)
		s.step = loginWantPassword
		return []byte(loginPasswordChallenge), false, nil
	case loginWantPassword:
		s.step = loginDone
		// An empty username goes to authenticate too, so it fails the same
		// way (and takes as long) as any unknown one.
		return nil, true, s.authenticate(s.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
