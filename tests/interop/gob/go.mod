module gobgolden

go 1.19
