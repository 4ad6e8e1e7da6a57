// RefractRetrieve: skeleton; see the issue-5 work in progress.
