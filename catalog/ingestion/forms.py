"""The upload form: several DICOM files or .zip archives at once."""
from __future__ import annotations

from django import forms


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):  # noqa: ANN001, ANN201
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    files = MultipleFileField(label="DICOM files or .zip archives", allow_empty_file=True,
                              error_messages={"required": "Choose at least one file to upload."})

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.empty_names: list[str] = []

    def clean_files(self) -> list:
        """The files with content; empty ones are listed by name in ``empty_names`` rather
        than refusing the whole upload. Only empty files: refused, naming them."""
        files = self.cleaned_data["files"]
        if not files:
            raise forms.ValidationError("Choose at least one file to upload.")
        self.empty_names = [f.name for f in files if not f.size]
        kept = [f for f in files if f.size]
        if not kept:
            raise forms.ValidationError(
                f"Nothing to upload: empty (0 bytes): {', '.join(self.empty_names[:20])}.")
        return kept
