package warmup

import (
	"reflect"
	"testing"
)

func TestMergeProviders(t *testing.T) {
	base := DefaultProviders()
	own := []Provider{
		{Name: "microsoft", MX: []string{"Outlook.COM."}, Hourly: 10},      // replaces the default group, in its place
		{Name: "fastmail", MX: []string{"messagingengine.com"}, Hourly: 5}, // a new group, after the defaults
	}
	got := MergeProviders(base, own)
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	if want := []string{"google", "microsoft", "yahoo", "apple", "fastmail"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("groups %q, want %q", names, want)
	}
	if ms := got[1]; !reflect.DeepEqual(ms, Provider{Name: "microsoft", MX: []string{"outlook.com"}, Hourly: 10}) {
		t.Errorf("the operator's microsoft group became %+v: it replaces the default whole, its MX in lower case without the dot", ms)
	}
	if got := Classify(got, []string{"mx1.hotmail.com"}); got != OtherProvider {
		t.Errorf("hotmail.com, dropped by the operator's microsoft group, is still classified %q", got)
	}
	if !reflect.DeepEqual(base, DefaultProviders()) || own[0].MX[0] != "Outlook.COM." {
		t.Error("MergeProviders changed its arguments")
	}
	if got := MergeProviders(nil, nil); len(got) != 0 {
		t.Errorf("no groups at all: %+v", got)
	}
}
